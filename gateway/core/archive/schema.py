"""The archive's schema over time: versioned migrations, monthly partitions made ahead, retention by month.

Migrations are the files `migrations/NNNN_name.sql`, applied in order, each once (the `schema_migrations`
table), all in one transaction under an advisory lock: `pushgw archive migrate` is safe to run again and
from two places at once. Partitions are months of acceptance (UTC), named `archive_events_pYYYYMM`; the
retention drops a month only when all of it is older than the cutoff, never a part of one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # a connection of its own, or one of a pool
    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

LOCK = 0x70757368  # pg_advisory_xact_lock key of schema changes ("push")
MONTHS_AHEAD = 3
_MIGRATION = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")
_PARTITION = re.compile(r"archive_events_p(\d{4})(\d{2})")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


@cache
def migrations() -> list[Migration]:
    """The shipped migrations, in version order (read once, at import: not in an event loop)."""
    found = []
    for path in resources.files("gateway.core.archive").joinpath("migrations").iterdir():
        if match := _MIGRATION.fullmatch(path.name):
            found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


migrations()


async def migrate(conn: Conn, now: datetime | None = None) -> list[str]:
    """Apply the migrations not applied yet, then make the partitions from this month to MONTHS_AHEAD
    ahead. Returns the names applied now ([] when the schema was up to date)."""
    applied = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(f"{migration.version:04d}_{migration.name}")
    await ensure_partitions(conn, months_from(now or datetime.now(UTC), MONTHS_AHEAD))
    return applied


async def pending(conn: Conn) -> list[str]:
    """The migrations not applied yet (all of them on an empty database)."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        if exists
        else set()
    )
    return [f"{m.version:04d}_{m.name}" for m in migrations() if m.version not in done]


def months_from(now: datetime, ahead: int) -> set[tuple[int, int]]:
    """(year, month) of `now` and the `ahead` months after it."""
    months, year, month = set(), now.year, now.month
    for _ in range(ahead + 1):
        months.add((year, month))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def _bounds(year: int, month: int) -> tuple[datetime, datetime]:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + 1, 1, 1, tzinfo=UTC) if month == 12 else datetime(year, month + 1, 1, tzinfo=UTC)
    return start, end


def partition_name(year: int, month: int) -> str:
    return f"archive_events_p{year:04d}{month:02d}"


async def ensure_partitions(conn: Conn, months: Iterable[tuple[int, int]]) -> None:
    """Make the partitions of these months that do not exist yet (under the schema lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        for year, month in sorted(months):
            start, end = _bounds(year, month)
            # DDL takes no parameters; the name and the bounds are made here from integers
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {partition_name(year, month)} PARTITION OF archive_events"
                f" FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
            )


async def partitions(conn: Conn) -> list[str]:
    """The names of the archive's monthly partitions, oldest first."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'archive_events'::regclass ORDER BY c.relname"
    )
    return [str(row["relname"]) for row in rows]


async def prune(conn: Conn, retention_days: int, now: datetime | None = None) -> list[str]:
    """Drop the months wholly older than `retention_days` before `now`, and the erasure tombstones as old
    (no row that old can still be on its way). Returns the partitions dropped."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=retention_days)
    dropped = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK)
        for name in await partitions(conn):
            match = _PARTITION.fullmatch(name)
            if match and _bounds(int(match[1]), int(match[2]))[1] <= cutoff:
                await conn.execute(f"DROP TABLE {name}")  # a name matched above: digits only
                dropped.append(name)
        await conn.execute("DELETE FROM archive_erasures WHERE erased_at < $1", cutoff)
    return dropped
