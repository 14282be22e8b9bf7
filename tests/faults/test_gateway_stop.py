"""The gateway stopped (SIGTERM) under load and started again on the same port: every request either got an
answer or a connection error that core banking retries against the restarted gateway; nothing accepted is
lost, nothing is queued or delivered twice.

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

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import KEY_ID, SECRET, Client, RedisServer, eventually, free_port
from tests.workers.flows import PUSHGW, StackFactory, kill_left, pending, pushgw_env

pytestmark = pytest.mark.e2e

EVENTS = 400
SHUTDOWN_TIMEOUT_S = 5
StartGateway = Callable[[int], Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def gateway_process(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start `pushgw gateway` on a given port and wait until it is ready; kills any still running."""
    started: list[asyncio.subprocess.Process] = []
    log_path = tmp_path / "gateway.log"

    async def start(port: int) -> asyncio.subprocess.Process:
        env = pushgw_env(
            redis_server.url,
            PUSHGW_API_KEYS=f"{KEY_ID}:{SECRET}",
            PUSHGW_RATE_LIMIT="1000/60",
            PUSHGW_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
            PUSHGW_LOG_LEVEL="WARNING",
        )
        with log_path.open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                PUSHGW, "gateway", "--port", str(port), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        started.append(process)
        async with aiohttp.ClientSession() as session:

            async def ready() -> bool:
                assert process.returncode is None, log_path.read_text()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await eventually(ready, timeout_s=30)
        return process

    yield start
    await kill_left(started)
    assert "Traceback" not in log_path.read_text()


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
