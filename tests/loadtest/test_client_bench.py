"""The client CPU bench runs every variant against a real redis-server and reports a cost per call."""

from __future__ import annotations

import math
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.core import keys
from loadtest import client_bench
from tests.support import RedisServer

QUICK = client_bench.Options(rounds=2, steps=2, batch=8)


def _assert_measured(results: list[client_bench.Result], rounds: int) -> None:
    for result in results:
        for samples in (result.cpu_us, result.loop_us, result.wall_us):
            assert len(samples) == rounds, result.variant.name
            assert all(math.isfinite(us) and us >= 0 for us in samples), result.variant.name
        assert max(result.wall_us) > 0, result.variant.name


async def test_redis_py_variants_run_and_are_measured(redis_server: RedisServer, redis: Redis) -> None:
    results = await client_bench.bench(redis_server.url, QUICK)

    names = [result.variant.name for result in results]
    assert names == [
        "redispy-coalescer-many",
        "redispy-coalescer-tasks",
        "redispy-pipeline",
        "redispy-pipeline-stock",
        "redispy-tasks",
        "redispy-connection",
        "redispy-delivery",
    ]
    _assert_measured(results, QUICK.rounds)
    pending = await redis.xpending(keys.stream(0), client_bench.GROUP)
    assert pending["pending"] == 0, "every entry the delivery variant read was acked by its finish script"
    table = client_bench.table(results)
    assert all(name in table for name in names)


@pytest.fixture
def glide() -> Any:
    """valkey-glide's module, imported outside the event loop (the import reads its native library)."""
    module = client_bench.glide_module()
    if module is None:
        pytest.skip("valkey-glide is not installed (it is not a project dependency)")
    return module


async def test_glide_variants_run_when_glide_is_installed(
    redis_server: RedisServer, redis: Redis, glide: Any
) -> None:
    options = client_bench.Options(rounds=1, steps=1, batch=8, only=("glide-",))

    results = await client_bench.bench(redis_server.url, options, glide)

    assert [result.variant.name for result in results] == [
        "glide-batch",
        "glide-batch-bytes",
        "glide-invoke-tasks",
        "glide-custom-tasks",
        "glide-delivery",
    ]
    _assert_measured(results, options.rounds)


def test_seeds_of_a_url() -> None:
    assert client_bench.seeds_of("redis://:pw@127.0.0.1:7000/0") == [("127.0.0.1", 7000)]
    assert client_bench.seeds_of("redis+cluster://10.0.0.1:7000,10.0.0.2:7001") == [
        ("10.0.0.1", 7000),
        ("10.0.0.2", 7001),
    ]
