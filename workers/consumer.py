"""Reading the delivery streams: new entries by XREADGROUP, stale ones of dead consumers by XAUTOCLAIM.

Deliveries run as tasks the consumer owns, at most `concurrency` at once (a read over several shards may start
up to shards - 1 more, whose slots it takes back before reading again); `drain` waits for them on shutdown
and cancels what outlives the deadline (those entries stay pending and are reclaimed by another worker).
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core import keys, metrics
from gateway.core.settings import Settings
from workers.delivery import Deliverer, Entry

log = logging.getLogger(__name__)
_Batch = list[tuple[str, list[tuple[str, dict[str, str]]]]]
REDIS_RETRY_S = 1.0


class Consumer:
    def __init__(self, settings: Settings, redis: Redis, deliverer: Deliverer, name: str) -> None:
        self._settings = settings
        self._redis = redis
        self._deliverer = deliverer
        self.name = name
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.worker_concurrency)
        self._streams = {keys.stream(shard): shard for shard in range(settings.shards)}
        self.delivered = 0
        # a blocking read must return before the client's socket timeout (the Redis deadline) fires
        self._block_ms = max(1, int(settings.redis_timeout_s * 500))

    async def read_loop(self, stopping: asyncio.Event) -> None:
        """Read new entries until `stopping` is set."""
        while not stopping.is_set():
            taken = await self._take_slots()
            # COUNT applies to each stream, so the free slots are shared out between the shards' streams
            per_stream = -(-taken // len(self._streams))
            try:
                batch = await self._redis.xreadgroup(
                    keys.GROUP,
                    self.name,
                    dict.fromkeys(self._streams, ">"),
                    count=per_stream,
                    block=self._block_ms,
                )
            except (RedisError, OSError) as exc:
                self._release(taken)
                await _pause_after(exc, "read")
                continue
            started = self._start(cast(_Batch, batch))
            if started > taken:  # rounding up started a few more than were free: take their slots back
                for _ in range(started - taken):
                    await self._slots.acquire()
            else:
                self._release(taken - started)

    async def reclaim_loop(self, stopping: asyncio.Event) -> None:
        """Every half visibility timeout, claim entries idle longer than it in any consumer's pending list."""
        interval_s = self._settings.reclaim_idle_s / 2
        while not stopping.is_set():
            try:
                for stream, shard in self._streams.items():
                    await self._reclaim(stream, shard)
            except (RedisError, OSError) as exc:
                await _pause_after(exc, "reclaim")
            await _wait(stopping, interval_s)

    async def _reclaim(self, stream: str, shard: int) -> None:
        cursor = "0-0"
        while True:
            taken = await self._take_slots()
            cursor, entries, *_ = await self._redis.xautoclaim(
                stream, keys.GROUP, self.name, self._settings.reclaim_idle_s * 1000, cursor, count=taken
            )
            metrics.RECLAIMED.inc(len(entries))
            started = self._start([(stream, entries)])
            self._release(taken - started)
            if cursor == "0-0" or not entries:
                return

    async def drain(self, deadline_s: float) -> int:
        """Wait up to `deadline_s` for in-flight deliveries; cancel the rest. Returns how many were cut."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=deadline_s)
        cut = list(self._inflight)
        for task in cut:
            task.cancel()
        await asyncio.gather(*cut, return_exceptions=True)
        return len(cut)

    async def _take_slots(self) -> int:
        """Wait for one free delivery slot, then take as many more as are free (up to a read batch)."""
        await self._slots.acquire()
        taken = 1
        while taken < self._settings.read_batch and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    def _start(self, batch: _Batch | None) -> int:
        started = 0
        for stream, entries in batch or []:
            shard = self._streams[stream]
            for entry_id, fields in entries:
                entry = Entry(shard, entry_id, fields)
                task = asyncio.create_task(self._run(entry), name=f"deliver-{entry_id}")
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                started += 1
        return started

    async def _run(self, entry: Entry) -> None:
        metrics.INFLIGHT.inc()
        try:
            await self._deliverer.deliver(entry)
            self.delivered += 1
        except (RedisError, OSError) as exc:
            log.warning("delivery left pending for reclaim: %s", type(exc).__name__)
        except Exception:
            log.exception("delivery failed unexpectedly; entry left pending for reclaim")
        finally:
            metrics.INFLIGHT.dec()
            self._slots.release()


async def _pause_after(exc: BaseException, what: str) -> None:
    log.warning("redis unavailable during %s: %s", what, type(exc).__name__)
    await asyncio.sleep(REDIS_RETRY_S)


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, waking early when stopping."""
    try:
        async with asyncio.timeout(seconds):
            await stopping.wait()
    except TimeoutError:
        pass
