"""The local cluster of the cluster tests: `loadtest.cluster.LocalCluster` on the suite's server binary
(redis-server, or the embedded valkey-server with PUSHGW_TEST_REDIS=valkey)."""

from __future__ import annotations

from pathlib import Path

from loadtest import cluster
from tests.support import server_binary_for_tests


class LocalCluster(cluster.LocalCluster):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory, server_binary_for_tests())
