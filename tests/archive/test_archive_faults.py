"""The archive under failure, at real boundaries: PostgreSQL stopped mid-run and started again, an archiver
cancelled in the middle of a batch, a batch committed but never acknowledged. End state each time: every
final state archived once, none lost, none older than Redis holds."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, cast

import asyncpg
import pytest

from gateway.core import keys, metrics
from gateway.core.archive.rows import row_of
from gateway.core.archive.server import PostgresServer
from gateway.core.archive.store import ArchiveStore, open_pool
from gateway.core.redis import ensure_groups
from gateway.core.settings import RateLimit
from tests.archive.helpers import archive_backlog, archived, sample, until_archived
from tests.conftest import Stack
from tests.support import KEY_ID, eventually, make_event
from tests.workers.flows import StackFactory
from workers import archive

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)
CUSTOMERS = 20


async def _stack(stack_for: StackFactory, archive_url: str, **overrides: Any) -> Stack:
    stack = await stack_for(archive_url=archive_url, rate_limit=RateLimit(100_000, 60), **overrides)
    for index in range(CUSTOMERS):
        await stack.client.bind(f"C-fault-{index}", f"oUser_fault{index:02d}")
    return stack


async def _send(stack: Stack, count: int) -> list[dict[str, Any]]:
    events = [make_event(customer_id=f"C-fault-{index % CUSTOMERS}") for index in range(count)]
    for start in range(0, count, 100):
        status, _ = await stack.client.call(
            "POST", "/v1/events/batch", {"events": events[start : start + 100]}
        )
        assert status == 200
    return events


async def _delivered(stack: Stack, events: list[dict[str, Any]]) -> None:
    async def done() -> bool:
        async with stack.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.hget(keys.event(0, KEY_ID, event["event_id"]), "status")
            return all(status == "delivered" for status in await pipe.execute())

    await eventually(done, timeout_s=30)


async def _exactly_as_redis(stack: Stack, url: str, events: list[dict[str, Any]]) -> None:
    """Every event archived once, at the version Redis holds."""
    rows = await archived(url)
    assert sorted(row["event_id"] for row in rows) == sorted(event["event_id"] for event in events)
    for row in rows:
        record = cast(dict[str, str], await stack.redis.hgetall(keys.event(0, KEY_ID, row["event_id"])))
        assert record, row["event_id"]
        assert (row["status"], row["version"]) == (record["status"], int(record["arch_v"]))


async def test_postgres_down_mid_run_loses_nothing_and_the_backlog_drains(
    stack_for: StackFactory, archive_url: str, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archive, "SAMPLE_S", 0.2)
    monkeypatch.setattr(archive, "RETRY_MOST_S", 0.5)
    stack = await _stack(stack_for, archive_url, workers=1)
    before = await _send(stack, 100)
    await until_archived(stack.redis, archive_url, len(before))
    errors_before = sample(metrics.ARCHIVE_WRITE_ERRORS)

    await asyncio.to_thread(postgres.stop)
    during = await _send(stack, 300)
    await _delivered(stack, during)  # delivery never waits for the archive

    async def backlog_alerting() -> bool:  # the ArchiveBacklog alert's inputs: the backlog and its age
        return sample(metrics.ARCHIVE_BACKLOG) >= len(during) and sample(metrics.ARCHIVE_LAG) > 0

    await eventually(backlog_alerting, timeout_s=10)
    peak = int(sample(metrics.ARCHIVE_BACKLOG))
    assert sample(metrics.ARCHIVE_WRITE_ERRORS) > errors_before
    assert await stack.redis.xlen(keys.archive(0)) >= len(during), "the backlog was trimmed while unarchived"

    restarted = time.monotonic()
    await asyncio.to_thread(postgres.start)
    await until_archived(stack.redis, archive_url, len(before) + len(during))
    drained_s = time.monotonic() - restarted

    async def cleared() -> bool:
        return sample(metrics.ARCHIVE_BACKLOG) == 0 and sample(metrics.ARCHIVE_LAG) == 0

    await eventually(cleared, timeout_s=10)
    await _exactly_as_redis(stack, archive_url, before + during)
    log.info("archive outage: %d events, backlog peak %d, drained in %.2f s", len(during), peak, drained_s)


async def _archiver_blocked(url: str) -> bool:
    """Whether a pushgw connection waits for a lock (its batch is mid-write)."""
    conn = await asyncpg.connect(url)
    try:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = 'pushgw' AND wait_event_type = 'Lock'"
        )
    finally:
        await conn.close()
    return bool(waiting)


async def test_an_archiver_cancelled_mid_batch_archives_exactly_once_after_restart(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await _stack(stack_for, archive_url, workers=1)
    locker = await asyncpg.connect(archive_url)
    lock = locker.transaction()
    await lock.start()
    await locker.execute("LOCK TABLE archive_events IN ACCESS EXCLUSIVE MODE")
    events = await _send(stack, 200)
    await _delivered(stack, events)
    await eventually(lambda: _archiver_blocked(archive_url), timeout_s=10)

    [(_, worker)] = stack._workers  # the worker dies with its batch in the middle of the write
    worker.cancel()
    await asyncio.gather(worker, return_exceptions=True)
    stack._workers.clear()
    await lock.rollback()
    await locker.close()
    assert await archived(archive_url) == [], "a cancelled batch was committed"
    assert await archive_backlog(stack.redis) == len(events)

    stack.start_worker(name="after-crash")  # another name: it claims the dead one's batch once idle
    await until_archived(stack.redis, archive_url, len(events))
    await _exactly_as_redis(stack, archive_url, events)


async def test_a_batch_committed_but_not_acknowledged_is_written_again_harmlessly(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await _stack(stack_for, archive_url, workers=0)
    await ensure_groups(stack.redis, 1)  # what a worker does at start: the groups read from the first entry
    status, _ = await stack.client.call(
        "PUT", "/v1/customers/C-quiet/preferences", {"muted_types": ["refund"]}
    )
    assert status == 200
    events = [make_event(customer_id="C-quiet", type="refund") for _ in range(50)]
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": events})
    assert {result["status"] for result in body["results"]} == {"suppressed"}  # final at ingest: archived
    assert await archive_backlog(stack.redis) == len(events)

    # a worker that wrote its batch and died before its XACK
    found: Any = await stack.redis.xreadgroup(keys.ARCHIVE_GROUP, "died", {keys.archive(0): ">"}, count=1000)
    [(_, entries)] = found
    pool = await open_pool(archive_url, max_size=1)
    try:
        assert await ArchiveStore(pool).write([row_of(fields) for _, fields in entries]) == len(events)
    finally:
        await pool.close()
    stale_before = sample(metrics.ARCHIVE_ROWS, result="stale")

    stack.start_worker(name="w-archiver")  # claims the dead one's entries once idle
    await eventually(lambda: _no_backlog(stack), timeout_s=15)
    await _exactly_as_redis(stack, archive_url, events)
    assert sample(metrics.ARCHIVE_ROWS, result="stale") - stale_before == len(events)


async def _no_backlog(stack: Stack) -> bool:
    return await archive_backlog(stack.redis) == 0
