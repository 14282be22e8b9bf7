"""Worker processes killed or stopped under load: nothing lost, nothing doubled, nothing left pending.

The workers run as the real `pushgw worker` command; the simulator is slowed so that many deliveries are in
flight when the signal lands, and the load keeps coming while it does.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import APP_SECRET, APPID, eventually, make_event
from tests.workers.flows import PUSHGW, StackFactory, kill_left, pending, pushgw_env, record_statuses

pytestmark = pytest.mark.e2e

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
            PUSHGW_WORKER_CONCURRENCY="32",
            PUSHGW_LOG_LEVEL="WARNING",
        )
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                PUSHGW, "worker", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        started.append(process)
        return process

    yield start
    await kill_left(started)


async def _delivered_at_least(stack: Stack, count: int) -> None:
    async def enough() -> bool:
        return int((await stack.sim("GET", "/sim/stats"))["delivered"]) >= count

    await eventually(enough, timeout_s=60)


async def _under_load(
    stack_for: StackFactory, worker_process: StartWorker, scenario: str, workers: int = 1
) -> tuple[Stack, Oracle, asyncio.Task[list[int]], list[asyncio.subprocess.Process]]:
    """Worker subprocesses with deliveries in flight against a slowed simulator, and a load still coming
    (the second half of the events is sent while the test does its damage)."""
    stack = await stack_for(workers=0, rate_limit=RateLimit(1000, 60))
    oracle = Oracle(stack, scenario, f"{EVENTS} events, 20 customers, 16 concurrent senders, sim 300 ms")
    customers = await bind_customers(oracle, 20, "crash")
    await stack.sim("PUT", "/sim/faults", {"latency_ms": 300})
    events = events_for(customers, EVENTS)
    await send_all(oracle, events[: EVENTS // 2])
    processes = [await worker_process(stack) for _ in range(workers)]
    rest = asyncio.create_task(send_all(oracle, events[EVENTS // 2 :], concurrency=4))
    await _delivered_at_least(stack, 40)
    return stack, oracle, rest, processes


async def test_sigkill_a_worker_mid_delivery_loses_and_doubles_nothing(
    stack_for: StackFactory, worker_process: StartWorker
) -> None:
    stack, oracle, rest, [process] = await _under_load(stack_for, worker_process, "sigkill one worker")
    assert await pending(stack.redis) > 0  # deliveries are in flight
    process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert await process.wait() == -signal.SIGKILL
    await rest
    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="rescuer")
    counts = await oracle.verdict(recovery_s=None)
    counts.recovery_s = round(time.monotonic() - killed_at, 1)
    assert counts.accepted == EVENTS
    assert await pending(stack.redis) == 0
    # what the killed worker had sent was sent again after the reclaim; client_msg_id made it harmless
    counts.notes["resent_deduplicated"] = (await stack.sim("GET", "/sim/stats"))["deduplicated"]
    assert counts.notes["resent_deduplicated"] > 0


async def test_sigkill_all_workers_and_restart_later(
    stack_for: StackFactory, worker_process: StartWorker
) -> None:
    """Every worker dies at once; the gateway goes on accepting; workers started later deliver all of it."""
    stack, oracle, rest, processes = await _under_load(
        stack_for, worker_process, "sigkill all workers, restart later", workers=2
    )
    for process in processes:
        process.send_signal(signal.SIGKILL)
    for process in processes:
        assert await process.wait() == -signal.SIGKILL
    killed_at = time.monotonic()
    await rest  # accepted while no worker ran
    assert await pending(stack.redis) > 0
    await stack.sim("PUT", "/sim/faults", {})
    await worker_process(stack)
    await worker_process(stack)
    counts = await oracle.verdict()
    counts.recovery_s = round(time.monotonic() - killed_at, 1)
    assert counts.accepted == EVENTS and counts.delivered == EVENTS
    assert await pending(stack.redis) == 0


async def test_sigterm_a_worker_under_load_exits_cleanly_and_hands_over(
    stack_for: StackFactory, worker_process: StartWorker
) -> None:
    stack, oracle, rest, [process] = await _under_load(stack_for, worker_process, "sigterm one worker")
    assert await pending(stack.redis) > 0
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    # it finishes what it has in flight and exits within the deadline (plus interpreter teardown)
    assert await asyncio.wait_for(process.wait(), timeout=SHUTDOWN_TIMEOUT_S + 15) == 0
    await rest
    assert await pending(stack.redis) == 0  # nothing left half-done for a reclaim
    assert int((await stack.sim("GET", "/sim/stats"))["delivered"]) < EVENTS  # it stopped early

    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="successor")
    counts = await oracle.verdict()
    counts.recovery_s = round(time.monotonic() - stopped_at, 1)
    assert counts.delivered == EVENTS


async def test_deliveries_cut_by_the_shutdown_deadline_are_reclaimed_and_not_doubled(
    stack_for: StackFactory,
) -> None:
    stack = await stack_for(workers=0, shutdown_timeout_s=0.2, rate_limit=RateLimit(1000, 60))
    oracle = Oracle(stack, "shutdown deadline cuts deliveries", "5 events, sim answers 3 s late")
    await oracle.bind("C-cut", "oUser_cut")
    # every answer comes 3 s late: WeChat has delivered, the worker is still waiting when the deadline hits
    await stack.sim("PUT", "/sim/faults", {"latency_ms": 3000})
    events = [make_event(customer_id="C-cut") for _ in range(5)]
    for event in events:
        await oracle.post(event)
    stack.start_worker(name="cut")
    await _delivered_at_least(stack, len(events))
    await stack.stop_workers()
    assert await pending(stack.redis) == len(events)  # handed back, not acknowledged
    assert set((await record_statuses(stack.redis, events)).values()) == {"queued"}

    await stack.sim("PUT", "/sim/faults", {})
    stack.start_worker(name="heir")
    counts = await oracle.verdict()
    assert counts.delivered == len(events)
    assert (await stack.sim("GET", "/sim/stats"))["deduplicated"] == len(events)
    assert await pending(stack.redis) == 0


async def test_a_second_sigterm_cuts_off_at_once_with_json_lines_a_summary_and_exit_0(
    stack_for: StackFactory, tmp_path: Path
) -> None:
    """Runbook, "Drain and restart safely": a second signal exits at once with JSON lines only and the
    summary; what it cut off stays pending for a reclaim (never re-sent sooner as a retry)."""
    stack = await stack_for(workers=0, rate_limit=RateLimit(1000, 60))
    await stack.client.bind("C-twice", "oUser_twice")
    await stack.sim("PUT", "/sim/faults", {"latency_ms": 20000})  # every send hangs past both signals
    events = [make_event(customer_id="C-twice") for _ in range(4)]
    for event in events:
        assert (await stack.client.post_event(event))[0] == 202
    log_path = tmp_path / "worker.log"
    env = pushgw_env(
        stack.settings.redis_url,
        PUSHGW_WECHAT_BASE_URL=stack.sim_url,
        PUSHGW_WECHAT_APPID=APPID,
        PUSHGW_WECHAT_SECRET=APP_SECRET,
        PUSHGW_METRICS_PORT="0",
        PUSHGW_SHUTDOWN_TIMEOUT_S="60",
        PUSHGW_WORKER_CONCURRENCY="32",
        PUSHGW_LOG_LEVEL="INFO",
    )
    log = await asyncio.to_thread(log_path.open, "wb")
    try:
        process = await asyncio.create_subprocess_exec(
            PUSHGW, "worker", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
    finally:
        await asyncio.to_thread(log.close)
    try:

        async def all_in_flight() -> bool:
            return int((await stack.sim("GET", "/sim/stats"))["calls"]["send"]) >= len(events)

        await eventually(all_in_flight, timeout_s=30)
        process.send_signal(signal.SIGTERM)

        async def first_heard() -> bool:
            return "signal received" in await asyncio.to_thread(log_path.read_text)

        await eventually(first_heard, timeout_s=10)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 0
    finally:
        await kill_left([process])
    text = await asyncio.to_thread(log_path.read_text)
    assert "Traceback" not in text
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]  # JSON lines, every one
    [summary] = [line for line in lines if line["msg"] == "worker stopped"]
    assert (summary["cut_off"], summary["delivered"], summary["deliveries"]) == (len(events), 0, {})
    assert await pending(stack.redis) == len(events)  # left for a reclaim after PUSHGW_RECLAIM_IDLE_S
    assert set((await record_statuses(stack.redis, events)).values()) == {"queued"}  # not "retrying"
    assert await stack.redis.zcard(keys.retries(0)) == 0
