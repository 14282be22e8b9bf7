"""The archiver: final states from each shard's archive stream into PostgreSQL, in batches, acknowledged only
once committed.

The finish scripts add an entry to `keys.archive(shard)` in the same atomic step as the final state
(gateway/core/scripts/lib/archive.lua), so a final state and its archive entry cannot part. One loop per
worker process reads through the `archiver` group (more processes share the streams out): first its own
pending entries (left by a restart under the same name), then whatever other consumers left idle past the
visibility timeout (XAUTOCLAIM: a worker that died mid-batch), then new entries. A batch is one transaction
(store.write: an idempotent, versioned upsert), then one XACK per stream. A crash between the commit and the
XACK writes the batch again, which changes nothing; a crash before the commit leaves the entries pending.

While PostgreSQL fails the loop retries the same batch with capped backoff and reads nothing more: the rest
waits in Redis, never trimmed (the scheduler trims a stream only below what every group acknowledged), and
`pushgw_archive_backlog` / `pushgw_archive_lag_seconds` (gateway/core/archive/backlog.py, sampled here and
by the gateways every few seconds) show it growing, for the ArchiveBacklog alert; it drains at batch speed
once PostgreSQL is back. Once a day (and at start) it makes the coming months' partitions and drops those
past PUSHGW_ARCHIVE_RETENTION_DAYS.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from typing import cast

from asyncpg.exceptions import DataError
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.core import keys, metrics
from gateway.core.archive import backlog
from gateway.core.archive.rows import InvalidEntry, Row, row_of
from gateway.core.archive.store import ARCHIVE_ERRORS, ArchiveStore, open_pool
from gateway.core.redis import RedisClient
from gateway.core.settings import Settings
from workers.consumer import sleep_or_stop

log = logging.getLogger(__name__)
SAMPLE_S = 5.0  # backlog and lag gauges
MAINTAIN_S = 86400.0  # partitions ahead and retention
RETRY_FIRST_S, RETRY_MOST_S = 0.5, 15.0  # backoff while PostgreSQL fails
REDIS_RETRY_S = 1.0
CLUSTER_BLOCK_MS = 100

_Entries = list[tuple[str, list[tuple[str, dict[str, str]]]]]  # [(stream, [(entry id, fields)])]


class Archiver:
    """One consumer of the archiver group over every shard's archive stream, writing to `store`."""

    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        store: ArchiveStore,
        name: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._store = store
        self.name = name
        self._streams = {keys.archive(shard): shard for shard in range(settings.shards)}
        self._cluster = isinstance(redis, RedisCluster)
        self._rotation = itertools.cycle(self._streams)
        self._clock = clock
        self._reclaim_due = 0.0
        self.archived = 0  # entries acknowledged by this consumer

    async def loop(self, stopping: asyncio.Event) -> None:
        """Archive until `stopping` is set. A batch being written then is finished (or left pending)."""
        own_pending = True  # a restart under the same name first takes back what it had read
        while not stopping.is_set():
            try:
                batch = await self._next_batch(own_pending)
                if own_pending and not _count(batch):
                    own_pending = False
                if _count(batch):
                    await self.archive(batch, stopping)
            except (RedisError, OSError) as exc:
                log.warning("archive read failed: %s", type(exc).__name__)
                await sleep_or_stop(stopping, REDIS_RETRY_S)
            except Exception:  # a bug here must not stop the deliveries sharing the worker's TaskGroup
                log.exception("archiver failed unexpectedly; its entries stay pending and are read again")
                await sleep_or_stop(stopping, RETRY_MOST_S)

    async def _next_batch(self, own_pending: bool) -> _Entries:
        size = self._settings.archive_batch
        if own_pending:
            return await self._read(size, "0", block_ms=None)
        if self._clock() >= self._reclaim_due:
            claimed = await self._reclaim(size)
            if _count(claimed):
                return claimed
            self._reclaim_due = self._clock() + self._settings.reclaim_idle_s / 2
        return await self._read(size, ">", block_ms=self._block_ms())

    def _block_ms(self) -> int:
        # a blocking read must return before the client's socket timeout (the Redis deadline) fires
        return max(1, int(self._settings.redis_timeout_s * 500))

    async def _read(self, size: int, start: str, block_ms: int | None) -> _Entries:
        """Up to about `size` entries from every shard's stream: new ones (`start` ">") or this consumer's
        own pending ones ("0"). On a cluster one XREADGROUP names one slot: the shards are read one by one
        without blocking, and an idle round blocks briefly on the next shard in rotation."""
        if not self._cluster:
            per_stream = -(-size // len(self._streams))
            found = await self._redis.xreadgroup(
                keys.ARCHIVE_GROUP,
                self.name,
                dict.fromkeys(self._streams, start),
                count=per_stream,
                block=block_ms,
            )
            return cast(_Entries, found or [])
        batch: _Entries = []
        for stream in self._streams:
            found = await self._redis.xreadgroup(keys.ARCHIVE_GROUP, self.name, {stream: start}, count=size)
            batch += cast(_Entries, found or [])
            if _count(batch) >= size:
                return batch
        if _count(batch) or block_ms is None:
            return batch
        stream = next(self._rotation)
        block = min(block_ms, CLUSTER_BLOCK_MS)
        found = await self._redis.xreadgroup(
            keys.ARCHIVE_GROUP, self.name, {stream: start}, count=size, block=block
        )
        return cast(_Entries, found or [])

    async def _reclaim(self, size: int) -> _Entries:
        """Entries another consumer read and left idle past the visibility timeout (it died mid-batch)."""
        idle_ms = self._settings.reclaim_idle_s * 1000
        batch: _Entries = []
        for stream in self._streams:
            _, entries, *_ = await self._redis.xautoclaim(
                stream, keys.ARCHIVE_GROUP, self.name, idle_ms, "0-0", count=size
            )
            if entries:
                batch.append((stream, [(entry_id, fields) for entry_id, fields in entries if fields]))
        return batch

    async def archive(self, batch: _Entries, stopping: asyncio.Event) -> None:
        """Write a batch and acknowledge it; while PostgreSQL fails, retry it with capped backoff until it
        is written or `stopping` is set (the entries then stay pending)."""
        rows = _rows(batch)
        delay_s, failing = RETRY_FIRST_S, False
        stored: tuple[int, int] | None = None
        while stored is None:
            try:
                stored = await self._store_rows(rows)
                continue
            except ARCHIVE_ERRORS as exc:
                metrics.ARCHIVE_WRITE_ERRORS.inc()
                if not failing:
                    log.warning("archive write failed, retrying (the entries wait in Redis): %s", _why(exc))
                failing = True
            if stopping.is_set():
                return
            await sleep_or_stop(stopping, delay_s)
            delay_s = min(delay_s * 2, RETRY_MOST_S)
        if failing:
            log.warning("archive writes resumed")
        written, refused = stored
        metrics.child(metrics.ARCHIVE_ROWS, "written").inc(written)
        metrics.child(metrics.ARCHIVE_ROWS, "stale").inc(len(rows) - written - refused)
        await self._acknowledge(batch)

    async def _store_rows(self, rows: list[Row]) -> tuple[int, int]:
        """(rows written, rows refused). A batch PostgreSQL refuses as data (SQLSTATE class 22: a value it
        will never take) is written row by row, the refused rows skipped and counted as invalid; any other
        error raises, for the batch to be retried."""
        try:
            return await self._store.write(rows), 0
        except DataError:
            pass
        written = refused = 0
        for row in rows:
            try:
                written += await self._store.write([row])
            except DataError as exc:
                refused += 1
                metrics.child(metrics.ARCHIVE_ROWS, "invalid").inc()
                log.warning("archive row refused by PostgreSQL, skipped: %s", _why(exc))
        return written, refused

    async def _acknowledge(self, batch: _Entries) -> None:
        """XACK the batch, stream by stream. A failure leaves the entries pending: written again later (the
        upsert makes that a no-op)."""
        try:
            for stream, entries in batch:
                if entries:
                    await self._redis.xack(stream, keys.ARCHIVE_GROUP, *(entry_id for entry_id, _ in entries))
                    self.archived += len(entries)
        except (RedisError, OSError) as exc:
            log.warning("archive acknowledgement failed (written again later): %s", type(exc).__name__)

    async def sample_loop(self, stopping: asyncio.Event) -> None:
        """Publish the backlog and lag gauges every SAMPLE_S (gateway/core/archive/backlog.py)."""
        await backlog.sample_loop(self._redis, self._settings.shards, stopping, SAMPLE_S)

    async def maintain_loop(self, stopping: asyncio.Event) -> None:
        """At start and then daily: the coming months' partitions, and the retention."""
        while not stopping.is_set():
            try:
                dropped = await self._store.maintain(self._settings.archive_retention_days)
                if dropped:
                    log.info("archive retention dropped %d monthly partitions", len(dropped))
                wait_s = MAINTAIN_S
            except ARCHIVE_ERRORS as exc:
                log.warning("archive maintenance failed: %s", _why(exc))
                wait_s = 60.0
            await sleep_or_stop(stopping, wait_s)


def _rows(batch: _Entries) -> list[Row]:
    """The rows of a batch's entries; an entry that is no record snapshot (or was deleted from the stream
    meanwhile) is skipped, and acknowledged with the batch: there is nothing to store, now or later."""
    rows: list[Row] = []
    for _, entries in batch:
        for _, fields in entries:
            if not fields:
                continue
            try:
                rows.append(row_of(fields))
            except InvalidEntry:
                metrics.child(metrics.ARCHIVE_ROWS, "invalid").inc()
                log.warning("archive entry is not an event record; skipped")
    return rows


def _count(batch: _Entries) -> int:
    return sum(len(entries) for _, entries in batch)


def _why(exc: BaseException) -> str:
    """What failed, without a URL or a value: the class, and PostgreSQL's SQLSTATE when there is one."""
    state = getattr(exc, "sqlstate", None)
    return f"{type(exc).__name__} ({state})" if state else type(exc).__name__


async def run_archiver(settings: Settings, redis: RedisClient, name: str, stopping: asyncio.Event) -> None:
    """`pushgw worker`'s archiver (PUSHGW_ARCHIVE_URL set): its pool, its loops, until `stopping`. Never
    raises for PostgreSQL or Redis trouble (it waits and retries)."""
    pool = await open_pool(settings.archive_url, max_size=2)
    try:
        archiver = Archiver(settings, redis, ArchiveStore(pool), name)
        async with asyncio.TaskGroup() as loops:
            loops.create_task(archiver.loop(stopping), name="archive-writer")
            loops.create_task(archiver.sample_loop(stopping), name="archive-sampler")
            loops.create_task(archiver.maintain_loop(stopping), name="archive-maintainer")
        log.info("archiver stopped", extra={"consumer": name, "archived": archiver.archived})
    finally:
        await pool.close()
