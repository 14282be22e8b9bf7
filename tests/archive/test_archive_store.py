"""The archive's storage rules against a real PostgreSQL: versioned idempotent upserts, the erasure tombstone,
retention by whole months, and migrations applied once (`pushgw archive migrate` run twice)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.archive import schema
from gateway.core.archive.rows import InvalidEntry, Row, record_of, row_of
from gateway.core.archive.server import PostgresServer
from gateway.core.archive.store import ArchiveStore, open_pool
from gateway.core.redis import ensure_groups
from gateway.core.settings import Settings
from gateway.ops.archive import run_archive
from tests.archive.helpers import archive_backlog, archived
from workers.archive import Archiver

ACCEPTED_MS = 1_795_000_000_123


@pytest.fixture
async def store(archive_url: str) -> AsyncIterator[ArchiveStore]:
    pool = await open_pool(archive_url, max_size=2)
    yield ArchiveStore(pool)
    await pool.close()


def _fields(version: int, status: str, **more: str) -> dict[str, str]:
    return {
        "src": "cbs",
        "eid": "CBS-1",
        "accepted_ms": str(ACCEPTED_MS),
        "arch_v": str(version),
        "status": status,
        "customer_id": "C-store",
        "amount": "12.30",
        "account_tail": "1234",
        "updated_ms": str(ACCEPTED_MS + version),
        **more,
    }


async def test_a_later_state_is_never_overwritten_by_an_earlier_one(
    store: ArchiveStore, archive_url: str
) -> None:
    delivered = row_of(_fields(1, "delivered", delivered_ms=str(ACCEPTED_MS + 5)))
    finished = row_of(
        _fields(2, "delivered", finish_status="failed:user block", finished_ms=str(ACCEPTED_MS + 9))
    )
    assert await store.write([finished]) == 1
    assert await store.write([delivered]) == 0  # late: stale
    assert await store.write([finished]) == 0  # again: nothing changes
    assert await store.write([delivered, finished, delivered]) == 0  # one batch holding both: the latest
    [row] = await archived(archive_url)
    assert (row["version"], row["finish_status"], str(row["amount"])) == (2, "failed:user block", "12.30")
    assert record_of(row)["accepted_ms"] == str(ACCEPTED_MS)
    assert (await store.event("cbs", "CBS-1") or {})["finish_status"] == "failed:user block"
    with pytest.raises(InvalidEntry):
        row_of({"src": "cbs", "eid": "x"})


async def test_an_erased_customer_is_never_written_back(store: ArchiveStore, archive_url: str) -> None:
    assert await store.write([row_of(_fields(1, "delivered"))]) == 1
    assert await store.erase("C-store") == 1
    assert await store.erase("C-store") == 0  # idempotent
    # the next state of the same event, snapshotted in Redis before the erasure, arrives late
    assert await store.write([row_of(_fields(2, "delivered", last_error="render: bad amount 12.30"))]) == 1
    later = datetime.now(UTC) + timedelta(minutes=5)  # an event of the customer accepted after the erasure
    fresh = row_of(
        {**_fields(1, "delivered"), "eid": "CBS-2", "accepted_ms": str(int(later.timestamp() * 1000))}
    )
    assert await store.write([fresh]) == 1
    rows = {row["event_id"]: row for row in await archived(archive_url)}
    erased = rows["CBS-1"]
    assert (erased["customer_id"], erased["amount"], erased["account_tail"], erased["last_error"]) == (
        None,
        None,
        None,
        "render",
    )
    assert erased["erased_at"] is not None and (erased["status"], erased["version"]) == ("delivered", 2)
    assert (rows["CBS-2"]["customer_id"], rows["CBS-2"]["erased_at"]) == ("C-store", None)
    conn = await asyncpg.connect(archive_url)
    try:
        refs = await conn.fetch("SELECT customer_ref FROM archive_erasures")
    finally:
        await conn.close()
    assert [ref["customer_ref"] for ref in refs] != ["C-store"] and len(refs) == 1  # a hash, never the id


def _in_month(year: int, month: int, event_id: str) -> Row:
    moment = datetime(year, month, 15, tzinfo=UTC)
    return row_of(
        {"src": "cbs", "eid": event_id, "accepted_ms": str(int(moment.timestamp() * 1000)), "arch_v": "1"}
        | {"status": "delivered"}
    )


async def test_retention_drops_whole_old_months_only(store: ArchiveStore, archive_url: str) -> None:
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert await store.write(
        [_in_month(2021, 11, "OLD"), _in_month(2021, 12, "EDGE"), _in_month(2026, 11, "NEW")]
    )
    conn = await asyncpg.connect(archive_url)
    try:
        # 2021-12 ends after the cutoff (5 years before now, 2021-12-07): kept whole, never cut
        assert await schema.prune(conn, 1825, now) == ["archive_events_p202111"]
        assert await schema.prune(conn, 1825, now) == []
        assert "archive_events_p202112" in await schema.partitions(conn)
    finally:
        await conn.close()
    assert sorted(row["event_id"] for row in await archived(archive_url)) == ["EDGE", "NEW"]


async def test_archive_migrate_twice_is_a_no_op(
    postgres: PostgresServer, archive_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = await asyncpg.connect(postgres.url())
    try:
        await admin.execute("CREATE DATABASE archive_empty_migrated_twice")
    finally:
        await admin.close()
    settings = Settings(archive_url=postgres.url("archive_empty_migrated_twice"), archive_retention_days=1825)
    answers = []
    for action in ("status", "migrate", "migrate", "status", "prune"):
        code = await run_archive(settings, argparse.Namespace(action=action))
        answers.append((code, orjson.loads(capsys.readouterr().out)))
    assert answers[0] == (1, {"pending": ["0001_events"], "partitions": []})
    assert answers[1][0] == 0 and answers[1][1]["applied"] == ["0001_events"]
    assert answers[2] == (0, {"applied": [], "partitions": answers[1][1]["partitions"]})
    assert answers[3] == (0, {"pending": [], "partitions": answers[1][1]["partitions"]})
    assert answers[4] == (0, {"dropped": [], "retention_days": 1825})
    unset = dataclasses.replace(settings, archive_url="")
    assert await run_archive(unset, argparse.Namespace(action="migrate")) == 1
    assert "PUSHGW_ARCHIVE_URL" in capsys.readouterr().out


async def test_a_row_postgres_refuses_is_skipped_not_retried_for_ever(
    redis: Redis, settings_for: Callable[..., Settings], store: ArchiveStore, archive_url: str
) -> None:
    await ensure_groups(redis, 1)
    refused: dict[Any, Any] = {**_fields(1, "delivered"), "eid": "CBS-NUL", "occurred_at": "2026-11-22\x00"}
    good: dict[Any, Any] = _fields(1, "delivered")
    for fields in (refused, good):
        await redis.xadd(keys.archive(0), fields)
    archiver = Archiver(settings_for(archive_url=archive_url), redis, store, "only")
    batch: Any = await redis.xreadgroup(keys.ARCHIVE_GROUP, "only", {keys.archive(0): ">"})
    await archiver.archive(batch, asyncio.Event())
    assert [row["event_id"] for row in await archived(archive_url)] == ["CBS-1"]
    assert await archive_backlog(redis) == 0  # both acknowledged: the refused one would never be taken
