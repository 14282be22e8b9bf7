"""Fixtures of the cluster tests: a real local Redis Cluster per session (three primaries, one replica
each), and the root fixtures `redis` and `settings_for` pointed at it, so `stack_for` builds the usual stack
(simulator, gateway, workers) over `redis+cluster://`."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from gateway.core.redis import connect_cluster, init_epoch
from gateway.core.settings import Settings
from tests.cluster.local import LocalCluster
from tests.support import stack_settings

SHARDS = 8  # shards 0-7 sit 2/2/4 on the three primaries of `--cluster create`


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        local.start()
        yield local
    finally:
        local.stop()


def cluster_settings(cluster: LocalCluster, **overrides: Any) -> Settings:
    return stack_settings(cluster.url, **{"shards": SHARDS, **overrides})


@pytest.fixture
def settings_for(cluster: LocalCluster) -> Callable[..., Settings]:
    """The root fixture over the cluster: keyword arguments override fields."""

    def build(**overrides: Any) -> Settings:
        return cluster_settings(cluster, **overrides)

    return build


@pytest.fixture
async def redis(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    """A client of the session's cluster, every primary emptied first and the data epoch initialised."""
    client = connect_cluster(cluster_settings(cluster, redis_timeout_s=5.0))
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    await init_epoch(client, SHARDS)
    yield client
    await client.aclose()


def node_of(redis: RedisCluster, key: str) -> ClusterNode:
    """The primary serving `key`'s slot (as the client's slot table says)."""
    node = redis.get_node_from_key(key)
    assert node is not None, key
    return node
