"""A worker process killed or stopped under load: nothing lost, nothing doubled, nothing left pending.

The worker runs as the real `pushgw worker` command; the simulator is slowed so that many deliveries are
in flight when the signal lands.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.support import APP_SECRET, APPID, eventually, make_event
from tests.workers.flows import PUSHGW, StackFactory, backlog, pending, pushgw_env, record_statuses

CUSTOMERS = [f"C-crash-{i:02d}" for i in range(20)]
EVENTS = 300
SHUTDOWN_TIMEOUT_S = 5
StartWorker = Callable[[Stack], Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def worker_process(tmp_path: Path) -> AsyncIterator[StartWorker]:
    """Start `pushgw worker` subprocesses against a stack; kills any still running at the end."""
    started: list[asyncio.subprocess.Process] = []
    log_path = tmp_path / "worker.log"

    async def start(stack: Stack) -> asyncio.subprocess.Process:
        env = pushgw_env(
            stack.settings.redis_url,
            PUSHGW_WECHAT_BASE_URL=stack.sim_url,
            PUSHGW_WECHAT_APPID=APPID,
            PUSHGW_WECHAT_SECRET=APP_SECRET,
            PUSHGW_RECLAIM_IDLE_S="2",
            PUSHGW_METRICS_PORT="0",
            PUSHGW_RETRY_BASE_S="0.05",
            PUSHGW_RETRY_CAP_S="0.2",
            PUSHGW_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
            PUSHGW_LOG_LEVEL="WARNING",
        )
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                PUSHGW, "worker", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _load(stack: Stack) -> list[dict[str, Any]]:
    for index, customer in enumerate(CUSTOMERS):
        await stack.client.bind(customer, f"oUser_crash_{index:02d}")
    events = [make_event(customer_id=CUSTOMERS[i % len(CUSTOMERS)]) for i in range(EVENTS)]
    for start in range(0, EVENTS, 100):
        status, body = await stack.client.call(
            "POST", "/v1/events/batch", {"events": events[start : start + 100]}
        )
        assert status == 200
        assert {result["status"] for result in body["results"]} == {"queued"}
    return events


async def _delivered_at_least(stack: Stack, count: int) -> None:
    async def enough() -> bool:
        return int((await stack.sim("GET", "/sim/stats"))["delivered"]) >= count

    await eventually(enough)


async def _all_delivered_once(stack: Stack, events: list[dict[str, Any]]) -> None:
    async def done() -> bool:
        return await backlog(stack.redis) == 0 and set(
            (await record_statuses(stack.redis, events)).values()
        ) == {"delivered"}

    await eventually(done)
    messages = (await stack.sim("GET", "/sim/messages"))["messages"]
    per_event = Counter(message["client_msg_id"] for message in messages)
    assert per_event == Counter({event["event_id"]: 1 for event in events})
    assert (await stack.sim("GET", "/sim/stats"))["delivered"] == EVENTS
    assert await pending(stack.redis) == 0


async def _consumer_pending(stack: Stack) -> dict[str, int]:
    consumers: Any = await stack.redis.xinfo_consumers(keys.stream(0), keys.GROUP)
    return {str(consumer["name"]): int(consumer["pending"]) for consumer in consumers}


async def _worker_mid_load(
    stack_for: StackFactory, worker_process: StartWorker
) -> tuple[Stack, list[dict[str, Any]], asyncio.subprocess.Process]:
    """A worker subprocess with deliveries in flight against a slowed simulator, part of the load done."""
    stack = await stack_for(workers=0, rate_limit=RateLimit(1000, 60))
    await stack.sim("PUT", "/sim/faults", {"latency_ms": 300})
    events = await _load(stack)
    process = await worker_process(stack)
    await _delivered_at_least(stack, 40)
    return stack, events, process


async def test_sigkill_mid_batch_loses_and_doubles_nothing(
    stack_for: StackFactory, worker_process: StartWorker
) -> None:
    stack, events, process = await _worker_mid_load(stack_for, worker_process)
    assert await pending(stack.redis) > 0  # deliveries are in flight
    process.send_signal(signal.SIGKILL)
    assert await process.wait() == -signal.SIGKILL
    orphaned = await _consumer_pending(stack)
    assert sum(orphaned.values()) > 0

    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="rescuer")
    await _all_delivered_once(stack, events)
    # what the killed worker had sent was sent again after the reclaim; client_msg_id made it harmless
    assert (await stack.sim("GET", "/sim/stats"))["deduplicated"] > 0


async def test_sigterm_under_load_exits_cleanly_and_hands_over(
    stack_for: StackFactory, worker_process: StartWorker
) -> None:
    stack, events, process = await _worker_mid_load(stack_for, worker_process)
    assert await pending(stack.redis) > 0
    process.send_signal(signal.SIGTERM)
    # it finishes what it has in flight and exits within the deadline (plus interpreter teardown)
    assert await asyncio.wait_for(process.wait(), timeout=SHUTDOWN_TIMEOUT_S + 10) == 0
    assert await pending(stack.redis) == 0  # nothing left half-done for a reclaim
    assert int((await stack.sim("GET", "/sim/stats"))["delivered"]) < EVENTS  # it stopped early

    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="successor")
    await _all_delivered_once(stack, events)


async def test_deliveries_cut_by_the_shutdown_deadline_are_reclaimed_and_not_doubled(
    stack_for: StackFactory,
) -> None:
    stack = await stack_for(workers=0, shutdown_timeout_s=0.2, rate_limit=RateLimit(1000, 60))
    await stack.client.bind(CUSTOMERS[0], "oUser_cut")
    # every answer comes 3 s late: WeChat has delivered, the worker is still waiting when the deadline hits
    await stack.sim("PUT", "/sim/faults", {"latency_ms": 3000})
    events = [make_event(customer_id=CUSTOMERS[0]) for _ in range(5)]
    for event in events:
        await stack.client.post_event(event)
    stack.start_worker(name="cut")
    await _delivered_at_least(stack, len(events))
    await stack.stop_workers()
    assert await pending(stack.redis) == len(events)  # handed back, not acknowledged

    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="heir")

    async def done() -> bool:
        return set((await record_statuses(stack.redis, events)).values()) == {"delivered"}

    await eventually(done)
    per_event = Counter(m["client_msg_id"] for m in await stack.delivered_to("oUser_cut"))
    assert per_event == Counter(e["event_id"] for e in events)
    assert (await stack.sim("GET", "/sim/stats"))["deduplicated"] == len(events)
    assert await pending(stack.redis) == 0
