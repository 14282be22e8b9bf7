"""Redis slow (a latency proxy) or unreachable (a blackholing proxy) between the gateway and redis-server, and
a gateway overloaded: answers come within the deadline as 503 + Retry-After, the client's retries add no
duplicate stream entry, excess load is refused early, and whatever was accepted is delivered once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.faultproxy import FaultProxy, Mode
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import RedisServer, eventually
from tests.workers.flows import StackFactory

pytestmark = pytest.mark.e2e

DEADLINE_S = 0.5
EVENTS = 200


@pytest.fixture
async def proxy(redis: Redis, redis_server: RedisServer) -> AsyncIterator[FaultProxy]:
    started = await FaultProxy(redis_server.port).start()
    yield started
    await started.stop()


@pytest.mark.parametrize(("mode", "latency_s"), [(Mode.LATENCY, 1.5), (Mode.BLACKHOLE, 0.0)])
async def test_a_slow_or_unreachable_redis_gets_503_in_time_and_retries_queue_once(
    stack_for: StackFactory, proxy: FaultProxy, mode: Mode, latency_s: float
) -> None:
    stack = await stack_for(
        workers=0, redis_url=proxy.url, redis_timeout_s=DEADLINE_S, rate_limit=RateLimit(1000, 60)
    )
    oracle = Oracle(stack, f"redis {mode.value} behind a proxy", f"{EVENTS} events, 16 senders")
    customers = await bind_customers(oracle, 20, f"slow{mode.value}")
    events = events_for(customers, EVENTS)
    await send_all(oracle, events[:50])
    await proxy.set_mode(mode, latency_s)
    started = time.monotonic()
    answers = await send_all(oracle, events[50:100], attempts=1)
    faulty_s = time.monotonic() - started
    assert set(answers) == {503}, "nothing is accepted while Redis cannot confirm the write"
    # every answer came within the deadline (plus scheduling): 50 requests 16 at a time, 4 rounds
    assert faulty_s < 4 * (DEADLINE_S + 2)

    await proxy.set_mode(Mode.FORWARD)
    recovered_at = time.monotonic()
    stack.start_worker(name="after")
    answers = await send_all(oracle, events[50:], attempts=40)  # core banking retries what got 503
    assert set(answers) <= {200, 202}
    counts = await oracle.verdict(faulty_window_s=round(faulty_s, 1))
    counts.recovery_s = round(time.monotonic() - recovered_at, 1)
    assert counts.accepted == EVENTS
    # every XADD the stream ever took (the worker's trim may already have removed acknowledged entries)
    info: Any = await stack.redis.xinfo_stream(keys.stream(0))
    assert info["entries-added"] == EVENTS, "a retry added a second stream entry"


async def test_overload_is_refused_early_and_nothing_accepted_is_dropped(
    stack_for: StackFactory, proxy: FaultProxy
) -> None:
    """Redis answers 20 ms late (the proxy) and the gateway admits 16 ingest requests at a time: 48
    concurrent senders are about 3x what it can work on. The excess gets 503 + Retry-After at once;
    /readyz says it is shedding; everything accepted is delivered once."""
    stack = await stack_for(
        workers=1,
        redis_url=proxy.url,
        redis_timeout_s=2.0,
        max_ingest_waiting=16,
        rate_limit=RateLimit(1000, 60),
    )
    oracle = Oracle(stack, "overload 3x admission", f"{EVENTS * 2} events, 48 senders, redis +20 ms")
    customers = await bind_customers(oracle, 20, "overload")
    await proxy.set_mode(Mode.LATENCY, 0.02)
    shedding_seen: list[bool] = []

    async def watch_readyz() -> None:
        while True:
            async with stack.session.get(stack.client.url + "/readyz") as ready:
                shedding_seen.append((await ready.json())["status"] == "shedding")
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch_readyz())
    try:
        answers = await send_all(oracle, events_for(customers, EVENTS * 2), concurrency=48, attempts=1)
    finally:
        watcher.cancel()
    await proxy.set_mode(Mode.FORWARD)
    refused = answers.count(503)
    assert refused > 0 and answers.count(202) > 0
    assert set(answers) <= {202, 503}
    assert any(shedding_seen)
    counts = await oracle.verdict(shed=refused)
    assert counts.accepted == answers.count(202)

    async def readiness_back() -> bool:
        async with stack.session.get(stack.client.url + "/readyz") as ready:
            return ready.status == 200

    await eventually(readiness_back, timeout_s=10)
