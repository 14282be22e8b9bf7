"""redis-server killed under load (AOF, appendfsync always) and restarted, with its data or empty.

With its data: no 202'd event is missing, the gateway answers 503 (never 202) while Redis is down, and the
gateway and workers resume by themselves. Empty (the AOF is gone): the gateway fails closed (503, a log
line, pushgw_redis_data_lost = 1), workers do not recreate the consumer group, until an operator
acknowledges the fresh start with `pushgw epoch reset`.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import RedisServer, eventually, make_event
from tests.workers.flows import StackFactory, pushgw

pytestmark = pytest.mark.e2e

EVENTS = 300


def _kill(redis_server: RedisServer) -> None:
    process = redis_server.process
    assert process is not None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    redis_server.process = None


async def _accepting_again(stack: Stack, oracle: Oracle) -> float:
    """Poll with new events until one is accepted; returns when (monotonic)."""

    async def accepted() -> bool:
        return await oracle.post(make_event(customer_id="C-redis-000")) == 202

    await eventually(accepted, timeout_s=30, step_s=0.1)
    return time.monotonic()


async def test_sigkill_redis_under_load_and_restart_loses_nothing(
    stack_for: StackFactory, redis_server: RedisServer
) -> None:
    stack = await stack_for(workers=1, rate_limit=RateLimit(1000, 60), redis_timeout_s=0.5)
    oracle = Oracle(stack, "sigkill redis-server, restart with its AOF", f"{EVENTS} events, 8 senders")
    customers = await bind_customers(oracle, 20, "redis")
    load = asyncio.create_task(send_all(oracle, events_for(customers, EVENTS), concurrency=8, attempts=60))

    async def some_accepted() -> bool:
        return len(oracle.accepted) >= 50

    await eventually(some_accepted)
    _kill(redis_server)
    killed_at = time.monotonic()
    accepted_before = set(oracle.accepted)
    # while it is down, nothing is accepted: every answer is a 503 with Retry-After
    for _ in range(5):
        status, _ = await stack.client.post_event(make_event(customer_id=customers[0]))
        assert status == 503
    accepted_while_down = set(oracle.accepted) - accepted_before
    redis_server.start()
    restarted_at = time.monotonic()
    resumed_at = await _accepting_again(stack, oracle)
    statuses = await load
    # every event was accepted once Redis was back (the client retried); a 200 duplicate is an event whose
    # script ran and was fsynced just before the kill, whose answer the client never got
    assert set(statuses) <= {200, 202}, "every event was accepted once Redis was back (the client retried)"
    counts = await oracle.verdict(
        restart_to_202_s=round(resumed_at - restarted_at, 1), down_s=round(restarted_at - killed_at, 1)
    )
    counts.recovery_s = round(resumed_at - killed_at, 1)
    # the gateway's answers while Redis was down could not have been 202s: only events whose script ran
    # before the kill (or after the restart) are accepted, and all of them are kept
    assert counts.accepted >= EVENTS
    assert len(accepted_while_down) <= 8  # at most the requests already inside Redis when it died


async def _stream_exists(redis: Redis) -> bool:
    """Through the test's own client, which may hold a connection to the Redis before the restart."""
    for _ in range(3):
        try:
            return bool(await redis.exists(keys.stream(0)))
        except RedisConnectionError:
            continue
    raise AssertionError("redis did not answer")


def _wipe(redis_server: RedisServer) -> None:
    for path in redis_server.directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _data_lost_metric() -> float:
    return REGISTRY.get_sample_value("pushgw_redis_data_lost") or 0.0


async def test_redis_restarted_empty_fails_closed_until_an_operator_acknowledges(
    stack_for: StackFactory, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await stack_for(workers=1, rate_limit=RateLimit(1000, 60), redis_timeout_s=0.5)
    oracle = Oracle(stack, "redis restarted empty", "100 events before, probes after")
    customers = await bind_customers(oracle, 10, "empty")
    await send_all(oracle, events_for(customers, 100), concurrency=8)
    counts = await oracle.verdict()  # delivered before the loss: the loss below is Redis's, not ours
    assert counts.delivered == 100

    _kill(redis_server)
    _wipe(redis_server)
    redis_server.start()
    lost_at = time.monotonic()

    async def refused_as_lost() -> bool:
        status, _ = await stack.client.post_event(make_event(customer_id=customers[0]))
        ready = await stack.session.get(stack.client.url + "/readyz")
        problems = (await ready.json()).get("problems", [])
        assert status != 202, "an event was accepted by a Redis that lost its data"
        return status == 503 and any("lost its data" in problem for problem in problems)

    await eventually(refused_as_lost, timeout_s=20)
    assert _data_lost_metric() == 1
    assert any("lost its data" in record.getMessage() for record in caplog.records)
    # the worker waits: it did not recreate the stream or its consumer group on the emptied Redis
    for _ in range(10):
        assert not await _stream_exists(stack.redis)
        await asyncio.sleep(0.1)

    # the operator checked with core banking and acknowledges a fresh start
    status, out = await pushgw(stack.settings.redis_url, "epoch", "reset", "--yes")
    assert status == 0, out
    after = Oracle(stack, "after an acknowledged fresh start", "20 events")
    for customer in customers:
        await after.bind(customer, oracle.openids[customer])
    await _accepting_again(stack, after)
    await send_all(after, events_for(customers, 20), concurrency=4)
    counts = await after.verdict()
    counts.recovery_s = round(time.monotonic() - lost_at, 1)
    assert _data_lost_metric() == 0


@pytest.mark.parametrize(
    ("extra", "wipe", "problem"),
    [
        (("--appendonly", "no"), True, "lost its data"),
        (("--maxmemory-policy", "allkeys-lru"), False, "maxmemory-policy"),
    ],
    ids=["without_persistence", "evicting"],
)
async def test_redis_restarted_unsafe_is_refused(
    stack_for: StackFactory, redis_server: RedisServer, extra: tuple[str, ...], wipe: bool, problem: str
) -> None:
    """Redis back without its AOF (so without its data) or with an evicting policy: /readyz names the
    problem, nothing is accepted, and no stream is recreated."""
    stack = await stack_for(workers=1, redis_timeout_s=0.5)
    oracle = Oracle(stack, f"redis restarted {' '.join(extra)}", "1 event before, probes after")
    await oracle.bind("C-unsafe", "oUser_unsafe")
    await oracle.post(make_event(customer_id="C-unsafe"))
    await oracle.verdict()
    _kill(redis_server)
    if wipe:
        _wipe(redis_server)
    redis_server.start(*extra)
    try:

        async def refused() -> bool:
            ready = await stack.session.get(stack.client.url + "/readyz")
            problems = " ".join((await ready.json()).get("problems", []))
            status, _ = await stack.client.post_event(make_event(customer_id="C-unsafe"))
            assert status != 202
            return ready.status == 503 and problem in problems and status == 503

        await eventually(refused, timeout_s=20)
        if wipe:
            assert not await _stream_exists(stack.redis)
        else:
            assert await _stream_exists(stack.redis)
            # the original stream, not a recreated one (its entry may already be trimmed: it was acknowledged)
            assert (await stack.redis.xinfo_stream(keys.stream(0)))["entries-added"] == 1
    finally:
        await stack.stop_workers()
        redis_server.stop()
        _wipe(redis_server)
        redis_server.start()
