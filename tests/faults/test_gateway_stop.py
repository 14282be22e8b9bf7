"""The gateway stopped (SIGTERM) under load and started again on the same port: every request either got an
answer or a connection error that core banking retries against the restarted gateway; nothing accepted is
lost, nothing is queued or delivered twice. And the drain before it (runbook, "Drain and restart safely"):
SIGTERM, SIGUSR1 or POST /admin/drain on the metrics listener make /readyz say `draining` at once while
requests are still served for PUSHGW_DRAIN_GRACE_S, then the process stops.

The gateway runs as the real `pushgw gateway` command; a worker delivers meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import cast

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.local_servers import free_port
from gateway.core.settings import RateLimit
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import KEY_ID, SECRET, Client, RedisServer, eventually, make_event
from tests.workers.flows import PUSHGW, StackFactory, kill_left, pending, pushgw_env

pytestmark = pytest.mark.e2e

EVENTS = 400
SHUTDOWN_TIMEOUT_S = 5
StartGateway = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def gateway_process(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start `pushgw gateway` on a given port and wait until it is ready; kills any still running."""
    started: list[asyncio.subprocess.Process] = []
    log_path = tmp_path / "gateway.log"

    async def start(port: int, **extra: str) -> asyncio.subprocess.Process:
        env = pushgw_env(
            redis_server.url,
            PUSHGW_API_KEYS=f"{KEY_ID}:{SECRET}",
            PUSHGW_RATE_LIMIT="1000/60",
            PUSHGW_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
            PUSHGW_LOG_LEVEL="WARNING",
            **extra,
        )
        log = await asyncio.to_thread(log_path.open, "ab")  # not in the loop (blockbuster)
        try:
            process = await asyncio.create_subprocess_exec(
                PUSHGW, "gateway", "--port", str(port), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        finally:
            await asyncio.to_thread(log.close)
        started.append(process)
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert process.returncode is None, "the gateway exited: see gateway.log"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout_s=30)
        return process

    yield start
    await kill_left(started)
    assert "Traceback" not in await asyncio.to_thread(log_path.read_text)


async def test_sigterm_the_gateway_under_load_and_restart_it(
    stack_for: StackFactory, gateway_process: StartGateway
) -> None:
    stack = await stack_for(workers=1, rate_limit=RateLimit(1000, 60))
    port = free_port()
    gateway = await gateway_process(port)
    external = dataclasses.replace(stack, client=Client(stack.session, f"http://127.0.0.1:{port}"))
    oracle = Oracle(external, "sigterm the gateway, restart it", f"{EVENTS} events, 20 customers, 16 senders")
    customers = await bind_customers(oracle, 20, "gwstop")
    load = asyncio.create_task(send_all(oracle, events_for(customers, EVENTS), concurrency=16, attempts=200))

    async def some_accepted() -> bool:
        return len(oracle.accepted) >= EVENTS // 4

    await eventually(some_accepted, timeout_s=30)
    gateway.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    # it finishes the requests it has and exits within its deadline (plus interpreter teardown)
    assert await asyncio.wait_for(gateway.wait(), timeout=SHUTDOWN_TIMEOUT_S + 15) == 0
    accepted_before_restart = len(oracle.accepted)
    assert accepted_before_restart < EVENTS, "the load was over before the gateway stopped"

    await gateway_process(port)  # the successor, on the same address
    recovery_s = round(time.monotonic() - stopped_at, 1)
    answers = await load
    assert set(answers) <= {200, 202}, "every event got its answer in the end"
    counts = await oracle.verdict(recovery_s=recovery_s, accepted_before_restart=accepted_before_restart)
    assert counts.accepted == counts.delivered == EVENTS
    assert counts.notes.get("no_answer", 0) > 0, "no request met the stopped gateway"
    assert await pending(stack.redis) == 0
    entries = cast(list[tuple[str, dict[str, str]]], await stack.redis.xrange(keys.stream(0), "-", "+"))
    per_event = [fields["eid"] for _, fields in entries]
    assert len(per_event) == len(set(per_event)), "a retry added a second stream entry"


GRACE_S = 3.0


async def _ready_state(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url + "/readyz") as response:
        return response.status, (await response.json())["status"]


async def _drained(gateway: asyncio.subprocess.Process, url: str, asked_at: float) -> None:
    """/readyz says draining at once, a signed event is still accepted during the grace, the process stops
    after it (exit 0), and then nothing listens."""
    async with aiohttp.ClientSession() as session:

        async def draining() -> bool:
            return await _ready_state(session, url) == (503, "draining")

        await eventually(draining, timeout_s=2)
        status, _ = await Client(session, url).post_event(make_event(customer_id="C-drain"))
        assert status == 202, "a request during the grace was not served"
        assert gateway.returncode is None, "the gateway stopped before its grace"
        assert await asyncio.wait_for(gateway.wait(), timeout=GRACE_S + SHUTDOWN_TIMEOUT_S + 10) == 0
        assert time.monotonic() - asked_at >= GRACE_S - 0.5, "it stopped before the grace was over"
        with pytest.raises(aiohttp.ClientConnectionError):
            await _ready_state(session, url)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
async def test_a_signal_drains_the_gateway_before_it_stops(
    redis: Redis, gateway_process: StartGateway, signum: signal.Signals
) -> None:
    port = free_port()
    gateway = await gateway_process(port, PUSHGW_DRAIN_GRACE_S=str(GRACE_S))
    gateway.send_signal(signum)
    await _drained(gateway, f"http://127.0.0.1:{port}", time.monotonic())


async def test_post_admin_drain_on_the_metrics_listener_only(
    redis: Redis, gateway_process: StartGateway
) -> None:
    port, metrics_port = free_port(), free_port()
    gateway = await gateway_process(
        port, PUSHGW_DRAIN_GRACE_S=str(GRACE_S), PUSHGW_GATEWAY_METRICS_PORT=str(metrics_port)
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/admin/drain") as refused:  # never on the ingress port
            assert refused.status in {401, 404, 405}
        assert await _ready_state(session, url) == (200, "ready")
        async with session.post(f"http://127.0.0.1:{metrics_port}/admin/drain") as asked:
            assert (asked.status, await asked.json()) == (202, {"status": "draining"})
    await _drained(gateway, url, time.monotonic())


async def test_a_second_sigterm_ends_the_grace_at_once(redis: Redis, gateway_process: StartGateway) -> None:
    port = free_port()
    gateway = await gateway_process(port, PUSHGW_DRAIN_GRACE_S="60")
    gateway.send_signal(signal.SIGTERM)
    async with aiohttp.ClientSession() as session:

        async def draining() -> bool:
            return await _ready_state(session, f"http://127.0.0.1:{port}") == (503, "draining")

        await eventually(draining, timeout_s=2)
    gateway.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(gateway.wait(), timeout=SHUTDOWN_TIMEOUT_S + 10) == 0
