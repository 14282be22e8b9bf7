"""The archive's part of `pushgw reconcile`: every final state Redis holds is in the PostgreSQL archive (at
the version Redis holds, or a later one) or still waits for it on its shard's archive stream (read by no
archiver yet, or read and not acknowledged). Anything else is `missing`, and the reconciliation does not add
up.

Read in this order, so that a state archived meanwhile cannot look missing: the records (by the caller),
then each archive stream's unacknowledged entries, then PostgreSQL (an entry is acknowledged only after its
row is committed). A final record without `arch_v` was finished while no archive was configured: counted
as `not_handed`, not missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, cast

from gateway.core import keys
from gateway.core.archive.store import ARCHIVE_ERRORS, ArchiveStore, open_pool
from gateway.core.redis import RedisClient
from gateway.core.settings import Settings

PAGE = 1000  # stream entries per XRANGE; keys per PostgreSQL query
MOST_LISTED = 100

Final = tuple[int, str, dict[str, str]]  # (shard, "source:event_id", its record)
Key = tuple[str, str, int]  # (source, event id, accepted ms)


@dataclass
class ArchiveReconciliation:
    final: int = 0  # final records of the window handed to the archive
    archived: int = 0  # of those, archived at their version or a later one
    waiting: int = 0  # of those, not archived yet but on the archive stream, unacknowledged
    not_handed: int = 0  # final records finished while no archive was configured
    missing: list[str] = field(default_factory=list)  # "source:event_id": in neither
    error: str | None = None  # the archive could not be read: nothing is proven

    @property
    def adds_up(self) -> bool:
        return self.error is None and not self.missing

    def report(self) -> dict[str, Any]:
        shown = asdict(self)
        shown.update(
            missing=self.missing[:MOST_LISTED], missing_count=len(self.missing), adds_up=self.adds_up
        )
        return shown


async def _unacknowledged(redis: RedisClient, shard: int) -> dict[tuple[str, str], int]:
    """(source, event id) -> the highest version among the archive stream's entries the archiver group has
    not acknowledged (unread, or pending)."""
    stream = keys.archive(shard)
    groups = await redis.xinfo_groups(stream) if await redis.exists(stream) else []
    group = next((g for g in groups if g["name"] == keys.ARCHIVE_GROUP), None)
    last_read = str(group["last-delivered-id"]) if group else "0-0"
    pending: set[str] = set()
    if group and int(group["pending"]):
        found = await redis.xpending_range(stream, keys.ARCHIVE_GROUP, "-", "+", int(group["pending"]))
        pending = {str(entry["message_id"]) for entry in found}
    waiting: dict[tuple[str, str], int] = {}
    start = "-"
    while True:
        page = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream, start, "+", PAGE))
        for entry_id, fields in page:
            if (entry_id in pending or _after(entry_id, last_read)) and "src" in fields and "eid" in fields:
                name = (fields["src"], fields["eid"])
                waiting[name] = max(waiting.get(name, 0), int(fields.get("arch_v") or 0))
        if len(page) < PAGE:
            return waiting
        start = "(" + page[-1][0]


def _after(entry_id: str, last_read: str) -> bool:
    def order(value: str) -> tuple[int, int]:
        ms, _, seq = value.partition("-")
        return int(ms), int(seq or 0)

    return order(entry_id) > order(last_read)


async def reconcile_archive(
    redis: RedisClient, settings: Settings, finals: list[Final]
) -> ArchiveReconciliation:
    """Check each final record of the window against the archive stream and PostgreSQL (read-only)."""
    result = ArchiveReconciliation()
    handed: dict[Key, tuple[int, str]] = {}  # key -> (version Redis holds, "source:event_id")
    for _, name, record in finals:
        if "arch_v" not in record:
            result.not_handed += 1
            continue
        source, _, event_id = name.partition(":")
        handed[(source, event_id, int(record.get("accepted_ms") or 0))] = (int(record["arch_v"]), name)
    result.final = len(handed)
    waiting: dict[tuple[str, str], int] = {}
    for shard in sorted({shard for shard, _, _ in finals}):
        waiting.update(await _unacknowledged(redis, shard))
    try:
        archived = await _archived_versions(settings.archive_url, list(handed))
    except ARCHIVE_ERRORS as exc:
        result.error = f"the archive could not be read: {type(exc).__name__}"
        return result
    for key, (version, name) in handed.items():
        if archived.get(key, 0) >= version:
            result.archived += 1
        elif waiting.get(key[:2], 0) >= version:
            result.waiting += 1
        else:
            result.missing.append(name)
    return result


async def _archived_versions(url: str, wanted: list[Key]) -> dict[Key, int]:
    pool = await open_pool(url, max_size=1)
    try:
        store, found = ArchiveStore(pool), {}
        for start in range(0, len(wanted), PAGE):
            found.update(await store.versions(wanted[start : start + PAGE]))
        return found
    finally:
        await pool.close()
