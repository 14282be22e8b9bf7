"""The archive in PostgreSQL (asyncpg): batched idempotent writes, the two lookups, erasure, and the presence
check reconcile uses. The schema is gateway/core/archive/migrations (applied by schema.py).

Writes are exactly-once in effect: a row is keyed by (source, event id, acceptance time) and an upsert takes a
state only when its version is higher than the stored one, so an entry written twice (a batch retried after
a crash between the commit and the XACK, or reclaimed by another worker) or late (two archivers racing)
changes nothing. A customer's erasure leaves a tombstone (their `pushgw_customer_ref`): a row of theirs
accepted before it that arrives afterwards (from the backlog in Redis) is stored without its personal fields.
Raises what asyncpg raises (`ARCHIVE_ERRORS`) when PostgreSQL fails.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from gateway.core.archive import schema
from gateway.core.archive.rows import COLUMNS, PERSONAL, Row, at_ms, latest, ms_of, record_of

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
# what a failing or unreachable PostgreSQL raises (a timeout, a refused or reset connection, an error)
ARCHIVE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

_TYPES = {
    "source": "text",
    "event_id": "text",
    "accepted_at": "timestamptz",
    "version": "integer",
    "status": "text",
    "attempts": "integer",
    "last_error": "text",
    "updated_at": "timestamptz",
    "delivered_at": "timestamptz",
    "finish_status": "text",
    "finished_at": "timestamptz",
    "notice": "text",
    "notified_at": "timestamptz",
    "notice_error": "text",
    "notice_attempts": "integer",
    "held": "text",
    "fallback": "text",
    "replayed_at": "timestamptz",
    "customer_id": "text",
    "type": "text",
    "amount": "numeric",
    "currency": "text",
    "account_tail": "text",
    "occurred_at": "text",
    "priority": "text",
    "msgid": "text",
    "erased_at": "timestamptz",
}
assert tuple(_TYPES) == COLUMNS  # noqa: S101 - the SQL below is built from both, in this order

_ERASED = "e.customer_ref IS NOT NULL"  # the row's customer was erased after it was accepted


def _selected(column: str) -> str:
    """The value of `column` a new row is stored with: without its personal fields if its customer was
    erased meanwhile (a render error's detail may quote the event: cut to "render", as in Redis)."""
    if column in PERSONAL:
        return f"CASE WHEN {_ERASED} THEN NULL ELSE b.{column} END"
    if column == "last_error":
        return f"CASE WHEN {_ERASED} AND b.last_error LIKE 'render%' THEN 'render' ELSE b.last_error END"
    if column == "erased_at":
        return "COALESCE(b.erased_at, e.erased_at)"
    return f"b.{column}"


_UPSERT = f"""
INSERT INTO archive_events AS a ({", ".join(COLUMNS)})
SELECT {", ".join(_selected(column) for column in COLUMNS)}
FROM unnest({", ".join(f"${i}::{kind}[]" for i, kind in enumerate(_TYPES.values(), 1))})
    AS b({", ".join(COLUMNS)})
LEFT JOIN archive_erasures e
    ON b.customer_id IS NOT NULL AND e.customer_ref = pushgw_customer_ref(b.customer_id)
    AND b.accepted_at < e.erased_at
ON CONFLICT (source, event_id, accepted_at) DO UPDATE SET
    {", ".join(f"{column} = EXCLUDED.{column}" for column in COLUMNS[3:])}, archived_at = now()
WHERE a.version < EXCLUDED.version
"""  # noqa: S608 - built from the fixed column table above, never from input

_MEMBER = "(source || ':' || event_id) COLLATE \"C\""  # ordered byte-wise, as Redis orders a zset's members

_ERASE = f"""
UPDATE archive_events SET {", ".join(f"{column} = NULL" for column in PERSONAL)},
    last_error = CASE WHEN last_error LIKE 'render%' THEN 'render' ELSE last_error END,
    erased_at = COALESCE(erased_at, now())
WHERE customer_id = $1
"""  # noqa: S608 - built from the fixed column table, never from input


async def open_pool(url: str, *, max_size: int) -> asyncpg.Pool:
    """A pool that connects lazily: made while PostgreSQL is down, it connects once it is back."""
    return await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=max_size,
        timeout=CONNECT_TIMEOUT_S,
        command_timeout=COMMAND_TIMEOUT_S,
        server_settings={"application_name": "pushgw"},
    )


def _count(status: str) -> int:
    """Rows touched, from a command status such as "INSERT 0 12" or "UPDATE 3"."""
    return int(status.rsplit(" ", 1)[-1])


class ArchiveStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._months: set[tuple[int, int]] = set()  # partitions known to exist

    async def write(self, rows: list[Row]) -> int:
        """Store a batch in one transaction (its months' partitions made first). Returns how many rows were
        written (new, or a higher version than the stored one); the rest were stale."""
        if not rows:
            return 0
        batch = latest(rows)
        months = {row.month for row in batch} - self._months
        try:
            async with self._pool.acquire() as conn:
                if months:
                    await schema.ensure_partitions(conn, months)
                    self._months |= months
                status = await conn.execute(_UPSERT, *(list(column) for column in zip(*batch, strict=True)))
        except BaseException:
            self._months.clear()  # a month pruned meanwhile is made again at the next try
            raise
        return _count(status)

    async def maintain(self, retention_days: int) -> list[str]:
        """Make the coming months' partitions and drop the months past the retention (schema.py). Returns
        the partitions dropped."""
        async with self._pool.acquire() as conn:
            await schema.ensure_partitions(conn, schema.months_from(datetime.now(UTC), schema.MONTHS_AHEAD))
            return await schema.prune(conn, retention_days)

    async def event(self, source: str, event_id: str) -> dict[str, str] | None:
        """The record fields of an archived event (its latest acceptance if the id was reused), or None."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM archive_events WHERE source = $1 AND event_id = $2"
                " ORDER BY accepted_at DESC LIMIT 1",
                source,
                event_id,
            )
        return None if row is None else record_of(row)

    async def timeline(
        self, customer_id: str, since_ms: int, limit: int, before: tuple[int, str] | None = None
    ) -> list[tuple[str, dict[str, str]]]:
        """("source:event_id", record) of a customer's archived events accepted at or after `since_ms`,
        newest first (then by member, byte-wise, as the live timeline), strictly after the cursor `before`
        (accepted ms, member) in that order."""
        query = (
            f"SELECT *, {_MEMBER} AS member FROM archive_events WHERE customer_id = $1 AND accepted_at >= $2"  # noqa: S608
        )
        args: list[Any] = [customer_id, at_ms(since_ms)]
        if before is not None:
            query += f" AND (accepted_at < $3 OR (accepted_at = $3 AND {_MEMBER} < $4))"
            args += [at_ms(before[0]), before[1]]
        query += f" ORDER BY accepted_at DESC, {_MEMBER} DESC LIMIT ${len(args) + 1}"
        async with self._pool.acquire() as conn:
            found = await conn.fetch(query, *args, limit)
        return [(str(row["member"]), record_of(row)) for row in found]

    async def erase(self, customer_id: str) -> int:
        """Remove the customer's personal fields from every archived row and leave the tombstone that keeps
        them out of rows still on their way. Idempotent. Returns the rows erased now."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO archive_erasures (customer_ref, erased_at)"
                " VALUES (pushgw_customer_ref($1), now()) ON CONFLICT (customer_ref) DO UPDATE"
                " SET erased_at = greatest(archive_erasures.erased_at, EXCLUDED.erased_at)",
                customer_id,
            )
            return _count(await conn.execute(_ERASE, customer_id))

    async def versions(self, events: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], int]:
        """The archived version of each (source, event id, accepted ms) that is archived."""
        if not events:
            return {}
        sources, event_ids, accepted = zip(*events, strict=True)
        async with self._pool.acquire() as conn:
            found = await conn.fetch(
                "SELECT a.source, a.event_id, a.accepted_at, a.version FROM archive_events a"
                " JOIN unnest($1::text[], $2::text[], $3::timestamptz[]) AS k(source, event_id, accepted_at)"
                " USING (source, event_id, accepted_at)",
                list(sources),
                list(event_ids),
                [at_ms(ms) for ms in accepted],
            )
        return {(r["source"], r["event_id"], ms_of(r["accepted_at"])): int(r["version"]) for r in found}
