"""Scheduled work moved back onto the streams: due retries, due digests, and trimming acknowledged entries."""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from redis.exceptions import RedisError

from gateway.core import clock, keys, metrics
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.consumer import pause_after, sleep_or_stop

log = logging.getLogger(__name__)
MOVE_INTERVAL_S = 0.25
MOVE_BATCH = 500
DIGEST_MOST_EVENTS = 50
TRIM_EVERY = 240  # move intervals, about a minute


class Scheduler:
    def __init__(self, settings: Settings, redis: RedisClient, scripts: Scripts) -> None:
        self._settings = settings
        self._redis = redis
        self._scripts = scripts

    async def loop(self, stopping: asyncio.Event) -> None:
        ticks = 0
        while not stopping.is_set():
            failed: BaseException | None = None
            for shard in range(self._settings.shards):  # a shard whose cluster node is down spares the others
                try:
                    await self.move_due(shard)
                    if ticks % TRIM_EVERY == 0:
                        for stream, _ in keys.consumer_groups(shard):
                            await self.trim(stream)
                except (RedisError, OSError) as exc:
                    failed = exc
            if failed is not None:
                await pause_after(failed, "scheduling")
            ticks += 1
            await sleep_or_stop(stopping, MOVE_INTERVAL_S)

    async def move_due(self, shard: int) -> int:
        """Move due retries (deliveries and notices) and flush due digests of one shard. Returns entries put
        on the streams."""
        moved = 0
        for critical in (True, False):
            retries, stream = keys.retries(shard, critical), keys.stream(shard, critical)
            moved += await self._scripts.move_retries(self._redis, retries, stream, MOVE_BATCH)
        notice_retries, notices = keys.notice_retries(shard), keys.notices(shard)
        moved += await self._scripts.move_retries(self._redis, notice_retries, notices, MOVE_BATCH)
        due = await self._redis.zrangebyscore(
            keys.digest_due(shard), "-inf", clock.now_ms(), start=0, num=100
        )
        for customer_id in cast(list[str], due):
            if await self._scripts.flush_digest(self._redis, shard, customer_id, DIGEST_MOST_EVENTS):
                metrics.DIGESTS.inc()
                moved += 1
        return moved

    async def trim(self, stream: str) -> None:
        """Trim a stream below the oldest entry any group still needs: its oldest pending entry, or
        what it has not read yet. Never below an entry that is not acknowledged by every group."""
        floor: str | None = None
        for group in await self._redis.xinfo_groups(stream):
            pending = await self._redis.xpending(stream, group["name"])
            needed = pending["min"] if pending["pending"] else _next_id(group["last-delivered-id"])
            floor = needed if floor is None or _id_key(needed) < _id_key(floor) else floor
        if floor is not None:
            await self._redis.xtrim(stream, minid=floor, approximate=True)


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _next_id(entry_id: str) -> str:
    ms, seq = _id_key(entry_id)
    return f"{ms}-{seq + 1}"
