"""Reading streams through a consumer group: new entries by XREADGROUP, stale ones by XAUTOCLAIM.

Entries are handled as tasks the consumer owns, at most `concurrency` at once (a read over several streams may
start up to streams - 1 more, whose slots it takes back before reading again), never two for one entry: an
entry of ours that XAUTOCLAIM returns while it is still in flight here (it waited longer than the visibility
timeout) is left to the task handling it. Once `stopping` is set the loops read and claim nothing more, even
after waiting for a slot; `drain` waits for the tasks and cancels what outlives the deadline (those entries
stay pending and are reclaimed by another worker). Streams come in tiers: a tier with entries waiting is read
before the tiers after it, so critical events overtake a backlog; each read takes only as many entries as
there are free slots.

On one Redis a read names every stream of a tier in one XREADGROUP. On a Redis Cluster one XREADGROUP may
only name streams of one slot, i.e. of one shard, so a read is one XREADGROUP per shard, sent concurrently
(free slots shared out between the shards, so none starves), tier by tier; when every shard is empty the
consumer blocks on one shard at a time, in rotation, for at most `CLUSTER_IDLE_BLOCK_MS`: an entry arriving
on another shard of an idle system waits at most that long. A shard whose node fails is left out for
`REDIS_RETRY_S` while the other shards are read on.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast

from prometheus_client import Gauge
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.core import metrics
from gateway.core.entries import message_id_of
from gateway.core.logs import bound
from gateway.core.redis import RedisClient
from gateway.core.settings import Settings

log = logging.getLogger(__name__)
_Batch = list[tuple[str, list[tuple[str, dict[str, str]]]]]
REDIS_RETRY_S = 1.0
CLUSTER_IDLE_BLOCK_MS = 50
Handler = Callable[[int, str, dict[str, str]], Awaitable[None]]  # (shard, entry id, fields)


@dataclass(frozen=True)
class Streams:
    """What a consumer reads: one group on streams (name -> shard) in tiers, the first tier first."""

    group: str
    tiers: tuple[dict[str, int], ...]

    def all(self) -> dict[str, int]:
        return {stream: shard for tier in self.tiers for stream, shard in tier.items()}


def by_shard(streams: dict[str, int]) -> dict[int, list[str]]:
    """The streams of each shard (they share the shard's hash tag, so one XREADGROUP may name them all)."""
    grouped: dict[int, list[str]] = {}
    for stream, shard in streams.items():
        grouped.setdefault(shard, []).append(stream)
    return grouped


@dataclass(frozen=True)
class Limits:
    concurrency: int
    read_batch: int
    reclaim_idle_s: int
    redis_timeout_s: float

    @staticmethod
    def of(settings: Settings, concurrency: int) -> Limits:
        return Limits(concurrency, settings.read_batch, settings.reclaim_idle_s, settings.redis_timeout_s)


class Consumer:
    def __init__(
        self,
        redis: RedisClient,
        name: str,
        streams: Streams,
        handle: Handler,
        limits: Limits,
        inflight: Gauge,
    ) -> None:
        self._redis = redis
        self._inflight_gauge = inflight
        self.name = name
        self._group = streams.group
        self._tiers = streams.tiers
        self._streams = streams.all()
        self._handle = handle
        self._limits = limits
        self._inflight: dict[tuple[str, str], asyncio.Task[None]] = {}  # (stream, entry id) -> its task
        self._slots = asyncio.Semaphore(limits.concurrency)
        self.handled = 0
        # a blocking read must return before the client's socket timeout (the Redis deadline) fires
        self._block_ms = max(1, int(limits.redis_timeout_s * 500))
        self._cluster = isinstance(redis, RedisCluster)
        self._rotation = itertools.cycle(sorted(by_shard(self._streams)))
        self._shard_down_until: dict[int, float] = {}  # monotonic s: a cluster shard left out after a failure

    @property
    def free_slots(self) -> int:
        """Delivery slots neither a task nor a loop holds (a blocking read holds those it would fill): exactly
        `concurrency` once the loops have returned and no task is left."""
        return self._slots._value  # asyncio.Semaphore keeps its count there; it has no public getter

    async def read_loop(self, stopping: asyncio.Event) -> None:
        """Read new entries until `stopping` is set."""
        while not stopping.is_set():
            taken = await self._take_slots()
            if stopping.is_set():  # set while waiting for a slot: read nothing more
                self._release(taken)
                return
            try:
                batch = await self._read(taken)
            except (RedisError, OSError) as exc:
                self._release(taken)
                await pause_after(exc, "read")
                continue
            started = self._start(batch)
            if started > taken:  # rounding up started a few more than were free: take their slots back
                for _ in range(started - taken):
                    await self._slots.acquire()
            else:
                self._release(taken - started)

    async def _read(self, count: int) -> _Batch:
        """Up to about `count` new entries: from the first tier that has some, else a blocking read of all."""
        if self._cluster:
            return await self._read_cluster(count)
        # the last tier too is read on its own first: the blocking read shares `count` out over every
        # tier's streams, so on a backlog it would take only a fraction of the free slots per round trip
        for tier in self._tiers:
            if batch := await self._read_streams(tier, count, block_ms=None):
                return batch
        return await self._read_streams(self._streams, count, block_ms=self._block_ms)

    async def _read_streams(self, streams: dict[str, int], count: int, block_ms: int | None) -> _Batch:
        # COUNT applies to each stream, so the free slots are shared out between the streams
        per_stream = -(-count // len(streams))
        batch = await self._redis.xreadgroup(
            self._group, self.name, dict.fromkeys(streams, ">"), count=per_stream, block=block_ms
        )
        return cast(_Batch, batch or [])

    async def _read_cluster(self, count: int) -> _Batch:
        """`_read` on a cluster: each tier by one XREADGROUP per shard, concurrently; when all are empty, a
        short blocking read of the next shard in rotation (all its streams)."""
        for tier in self._tiers:
            if batch := await self._read_shards(by_shard(tier), count):
                return batch
        shard = self._next_shard()
        streams = dict.fromkeys(by_shard(self._streams)[shard], shard)
        block_ms = min(self._block_ms, CLUSTER_IDLE_BLOCK_MS)
        try:
            return await self._read_streams(streams, count, block_ms=block_ms)
        except (RedisError, OSError):
            self._shard_failed(shard)
            raise

    async def _read_shards(self, shards: dict[int, list[str]], count: int) -> _Batch:
        """One non-blocking XREADGROUP per shard that is not left out, concurrently, each bounded by the
        Redis deadline. A failed shard is left out for a while; raises only when every shard failed."""
        now = time.monotonic()
        up = {
            shard: streams for shard, streams in shards.items() if self._shard_down_until.get(shard, 0) <= now
        }
        if not up:
            raise RedisError("every shard's Redis node failed recently")
        per_shard = -(-count // len(up))
        answers = await asyncio.gather(
            *(self._bounded_read(dict.fromkeys(streams, shard), per_shard) for shard, streams in up.items()),
            return_exceptions=True,
        )
        batch: _Batch = []
        failed: list[BaseException] = []
        for shard, answer in zip(up, answers, strict=True):
            if isinstance(answer, RedisError | OSError):
                self._shard_failed(shard)
                failed.append(answer)
            elif isinstance(answer, BaseException):
                raise answer
            else:
                batch.extend(answer)
        if len(failed) == len(up):
            raise failed[0]
        return batch

    async def _bounded_read(self, streams: dict[str, int], count: int) -> _Batch:
        async with asyncio.timeout(self._limits.redis_timeout_s):
            return await self._read_streams(streams, count, block_ms=None)

    def _next_shard(self) -> int:
        """The next shard in rotation that is not left out (any, if all are)."""
        now = time.monotonic()
        shard = next(self._rotation)
        for _ in range(len(self._shard_down_until)):
            if self._shard_down_until.get(shard, 0) <= now:
                break
            shard = next(self._rotation)
        return shard

    def _shard_failed(self, shard: int) -> None:
        self._shard_down_until[shard] = time.monotonic() + REDIS_RETRY_S

    async def reclaim_loop(self, stopping: asyncio.Event) -> None:
        """Every half visibility timeout, claim entries idle longer than it in any consumer's pending list."""
        interval_s = self._limits.reclaim_idle_s / 2
        while not stopping.is_set():
            failed: BaseException | None = None
            for stream, shard in self._streams.items():  # a failed stream (its node down) spares the others
                if stopping.is_set():
                    return
                try:
                    await self._reclaim(stream, shard, stopping)
                except (RedisError, OSError) as exc:
                    failed = exc
            if failed is not None:
                await pause_after(failed, "reclaim")
            await sleep_or_stop(stopping, interval_s)

    async def _reclaim(self, stream: str, shard: int, stopping: asyncio.Event) -> None:
        cursor = "0-0"
        while True:
            taken = await self._take_slots()
            if stopping.is_set():  # set while waiting for a slot: claim nothing more
                self._release(taken)
                return
            try:
                cursor, entries, *_ = await self._redis.xautoclaim(
                    stream, self._group, self.name, self._limits.reclaim_idle_s * 1000, cursor, count=taken
                )
            except BaseException:
                self._release(taken)  # else every failed claim would shrink the concurrency for good
                raise
            started = self._start([(stream, entries)])
            metrics.RECLAIMED.inc(started)
            self._release(taken - started)
            if cursor == "0-0" or not entries:
                return

    async def drain(self, deadline_s: float) -> int:
        """Wait up to `deadline_s` for in-flight deliveries; cancel the rest. Returns how many were cut."""
        if self._inflight:
            await asyncio.wait(set(self._inflight.values()), timeout=deadline_s)
        cut = list(self._inflight.values())
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        return len(cut)

    async def _take_slots(self) -> int:
        """Wait for one free delivery slot, then take as many more as are free (up to a read batch)."""
        await self._slots.acquire()
        taken = 1
        while taken < self._limits.read_batch and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start(self, batch: _Batch) -> int:
        """Start a task for each entry not already in flight here; returns how many were started (each holds
        one slot, which it gives back when it ends)."""
        started = 0
        for stream, entries in batch:
            shard = self._streams[stream]
            for entry_id, fields in entries:
                key = (stream, entry_id)
                if key in self._inflight:  # reclaimed from ourselves while still being handled
                    log.debug("%s entry still in flight here; not started again", self._group)
                    continue
                work = self._run(shard, entry_id, fields)
                task = asyncio.create_task(work, name=f"{self._group}-{entry_id}")
                self._inflight[key] = task
                task.add_done_callback(functools.partial(self._forget, key))
                started += 1
        return started

    def _forget(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]

    async def _run(self, shard: int, entry_id: str, fields: dict[str, str]) -> None:
        inflight = self._inflight_gauge
        inflight.inc()
        try:
            await self._handle(shard, entry_id, fields)
            self.handled += 1
        except (RedisError, OSError) as exc:
            with bound(event_id=message_id_of(fields)):  # the line is about that event
                log.warning("%s entry left pending for reclaim: %s", self._group, type(exc).__name__)
        except Exception:
            with bound(event_id=message_id_of(fields)):
                log.exception("%s entry failed unexpectedly; left pending for reclaim", self._group)
        finally:
            inflight.dec()
            self._slots.release()


async def pause_after(exc: BaseException, what: str) -> None:
    log.warning("redis unavailable during %s: %s", what, type(exc).__name__)
    await asyncio.sleep(REDIS_RETRY_S)


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, waking early when stopping."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass
