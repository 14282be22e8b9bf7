"""A real `pushgw worker` archiving into a real PostgreSQL, SIGKILLed in the middle of a batch write, then a
new worker process: every final state archived exactly once, at the state Redis holds, and the backlog
(in Redis, and as the new worker's gauge) back to 0.

"Mid-batch" is made certain, not timed: a test transaction holds an ACCESS EXCLUSIVE lock on archive_events,
so the archiver's upsert waits on it in PostgreSQL (seen in pg_stat_activity) when the kill lands, with its
batch read from the stream and not acknowledged. The dead worker's server backend is then ended (as
PostgreSQL does once it notices the client is gone; it waits in the statement's parse, so it could not commit
anyway) before the lock goes. A batch committed but not acknowledged is test_archive_faults' last test.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core import keys
from gateway.core.local_servers import free_port
from gateway.core.settings import RateLimit
from tests.archive.helpers import archive_backlog, archived, until_archived
from tests.conftest import Stack
from tests.support import APP_SECRET, APPID, KEY_ID, eventually, make_event
from tests.workers.flows import PUSHGW, StackFactory, kill_left, pushgw_env, record_statuses

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)
CUSTOMERS = 20
MUTED = 100  # final at ingest (suppressed): in the stream before the first worker reads it
DELIVERED = 200  # final once the worker delivered them, while its first batch waits on the lock
StartWorker = Callable[[Stack, str], Awaitable[tuple[asyncio.subprocess.Process, int]]]


@pytest.fixture
async def archiving_worker(tmp_path: Path) -> AsyncIterator[StartWorker]:
    """Start `pushgw worker` subprocesses that archive to a URL; returns each with its metrics port. Kills any
    still running at the end."""
    started: list[asyncio.subprocess.Process] = []

    async def start(stack: Stack, archive_url: str) -> tuple[asyncio.subprocess.Process, int]:
        port = free_port()
        env = pushgw_env(
            stack.settings.redis_url,
            PUSHGW_WECHAT_BASE_URL=stack.sim_url,
            PUSHGW_WECHAT_APPID=APPID,
            PUSHGW_WECHAT_SECRET=APP_SECRET,
            PUSHGW_ARCHIVE_URL=archive_url,
            PUSHGW_RECLAIM_IDLE_S="2",
            PUSHGW_METRICS_PORT=str(port),
            PUSHGW_SHUTDOWN_TIMEOUT_S="5",
            PUSHGW_LOG_LEVEL="WARNING",
        )
        with (tmp_path / "worker.log").open("ab") as log:
            process = await asyncio.create_subprocess_exec(
                PUSHGW, "worker", env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
            )
        started.append(process)
        return process, port

    yield start
    await kill_left(started)


async def _waiting_upsert(url: str) -> int | None:
    """The server pid of a pushgw connection whose archive upsert waits for a lock, if there is one."""
    conn = await asyncpg.connect(url)
    try:
        pid = await conn.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'pushgw' AND wait_event_type = 'Lock'"
            " AND query LIKE '%INSERT INTO archive_events AS a%'"
        )
    finally:
        await conn.close()
    return None if pid is None else int(pid)


async def _backend_gone(url: str, pid: int) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return not await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid)
    finally:
        await conn.close()


async def _pending_event_ids(stack: Stack) -> set[str]:
    """The event ids of the archive entries read but not acknowledged (the dead worker's batch)."""
    stream = keys.archive(0)
    found: Any = await stack.redis.xpending_range(stream, keys.ARCHIVE_GROUP, "-", "+", 10_000)
    ids = [str(entry["message_id"]) for entry in found]
    entries = [cast(list[Any], await stack.redis.xrange(stream, entry_id, entry_id)) for entry_id in ids]
    return {fields["eid"] for [(_, fields)] in entries}


async def _gauge(port: int, name: str, session: aiohttp.ClientSession) -> float | None:
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
    except aiohttp.ClientError:
        return None  # not listening yet
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return next((s.value for s in samples if s.name == name and not s.labels), None)


async def _counter(port: int, result: str, session: aiohttp.ClientSession) -> float:
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return next(
        s.value for s in samples if s.name == "pushgw_archive_rows_total" and s.labels == {"result": result}
    )


async def _events(stack: Stack) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    for index in range(CUSTOMERS):
        await stack.client.bind(f"C-kill-{index}", f"oUser_kill{index:02d}")
    status, _ = await stack.client.call(
        "PUT", "/v1/customers/C-kill-0/preferences", {"muted_types": ["refund"]}
    )
    assert status == 200
    muted = [make_event(customer_id="C-kill-0", type="refund") for _ in range(MUTED)]
    delivered = [make_event(customer_id=f"C-kill-{index % CUSTOMERS}") for index in range(DELIVERED)]
    return muted, delivered


async def _post(stack: Stack, events: list[dict[str, Any]], wanted: str) -> None:
    for start in range(0, len(events), 100):
        status, body = await stack.client.call(
            "POST", "/v1/events/batch", {"events": events[start : start + 100]}
        )
        assert status == 200 and {r["status"] for r in body["results"]} == {wanted}, body


async def test_a_worker_sigkilled_mid_batch_write_then_a_new_one_archives_each_final_state_once(
    stack_for: StackFactory, archive_url: str, archiving_worker: StartWorker
) -> None:
    stack = await stack_for(workers=0, archive_url=archive_url, rate_limit=RateLimit(100_000, 60))
    muted, delivered = await _events(stack)
    events = muted + delivered
    locker = await asyncpg.connect(archive_url)
    lock = locker.transaction()
    await lock.start()
    await locker.execute("LOCK TABLE archive_events IN ACCESS EXCLUSIVE MODE")

    await _post(stack, muted, "suppressed")
    doomed, _ = await archiving_worker(stack, archive_url)
    await _post(stack, delivered, "queued")

    async def all_delivered() -> bool:
        return set((await record_statuses(stack.redis, delivered)).values()) == {"delivered"}

    await eventually(all_delivered, timeout_s=30)  # delivery never waits for the archive
    backend: list[int] = []

    async def upsert_waits() -> bool:
        pid = await _waiting_upsert(archive_url)
        backend.extend([pid] if pid is not None else [])
        return pid is not None

    await eventually(upsert_waits, timeout_s=15)
    in_batch = await _pending_event_ids(stack)
    assert in_batch, "the archiver's batch is not pending"

    doomed.send_signal(signal.SIGKILL)
    assert await doomed.wait() == -signal.SIGKILL
    assert await locker.fetchval("SELECT pg_terminate_backend($1)", backend[0])
    await lock.rollback()
    await locker.close()
    await eventually(lambda: _backend_gone(archive_url, backend[0]), timeout_s=15)
    assert await archived(archive_url) == [], "the dead worker's batch was committed"
    assert await archive_backlog(stack.redis) == len(events), "an entry of the dead batch was acknowledged"

    _, port = await archiving_worker(stack, archive_url)  # another pid, another name: it claims the batch
    rows = await until_archived(stack.redis, archive_url, len(events))
    assert sorted(row["event_id"] for row in rows) == sorted(event["event_id"] for event in events)
    for row in rows:
        record = cast(dict[str, str], await stack.redis.hgetall(keys.event(0, KEY_ID, row["event_id"])))
        assert (row["status"], row["version"]) == (record["status"], int(record["arch_v"]))
    assert {row["status"] for row in rows} == {"suppressed", "delivered"}
    assert sum(row["status"] == "suppressed" for row in rows) == MUTED

    async def gauge_drained() -> bool:
        return await _gauge(port, "pushgw_archive_backlog", stack.session) == 0

    await eventually(gauge_drained, timeout_s=15)  # the new worker's own sample, every 5 s
    assert await _counter(port, "written", stack.session) == len(events)
    assert await _counter(port, "stale", stack.session) == 0
    log.info("archiver killed mid-batch: %d of %d entries in its batch", len(in_batch), len(events))
