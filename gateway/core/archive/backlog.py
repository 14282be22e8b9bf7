"""What waits in Redis for the PostgreSQL archive: the `archiver` group's unread and pending entries over
every shard's archive stream, and the age of the oldest, published as `pushgw_archive_backlog` and
`pushgw_archive_lag_seconds` (the PushgwArchiveBacklog alert's inputs).

Every process that has PUSHGW_ARCHIVE_URL samples it: each worker (whose archiver drains it) and each gateway
(which hands final states over at ingest and erasure but archives nothing). So the backlog stays visible when
no worker archives (the workers lack the URL), which is the case it must catch. All report the same figures:
dashboards and alerts take `max`. Ages use Redis TIME, so a skewed clock does not make a backlog look old.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from redis.exceptions import RedisError, ResponseError

from gateway.core import keys, metrics
from gateway.core.redis import RedisClient

log = logging.getLogger(__name__)
SAMPLE_S = 5.0
LAG_SCAN_MOST = 10_000  # unread entries counted one by one when Redis cannot say (entries deleted mid-stream)


async def backlog(redis: RedisClient, shards: int) -> tuple[int, float]:
    """(entries not yet archived, seconds since the oldest of them was added) over every shard, by Redis
    TIME. A shard without an archive stream has nothing waiting; one without the `archiver` group (no
    worker started yet) has all of its entries waiting. Raises RedisError."""
    seconds, micros = await redis.time()
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    total, oldest_ms = 0, now_ms
    for shard in range(shards):
        waiting, first_ms = await _stream_backlog(redis, keys.archive(shard))
        total += waiting
        if first_ms is not None:
            oldest_ms = min(oldest_ms, first_ms)
    return total, max(0, now_ms - oldest_ms) / 1000


async def _stream_backlog(redis: RedisClient, stream: str) -> tuple[int, int | None]:
    """(entries waiting, unix ms of the oldest) of one stream; each call names one key, so one slot."""
    try:
        groups = await redis.xinfo_groups(stream)
    except ResponseError:  # no such stream yet: nothing waits
        return 0, None
    group = next((g for g in groups if g["name"] == keys.ARCHIVE_GROUP), None)
    if group is None:  # no worker made the group yet: it will read from the start, so all of it waits
        first = cast(list[tuple[str, object]], await redis.xrange(stream, count=1))
        return int(await redis.xlen(stream)), _ms(str(first[0][0])) if first else None
    last_read = str(group["last-delivered-id"])
    pending = await redis.xpending(stream, keys.ARCHIVE_GROUP)
    unread = cast(list[tuple[str, object]], await redis.xrange(stream, min=f"({last_read}", count=1))
    lag = group.get("lag")
    if lag is None and unread:  # Redis cannot tell: count the unread, capped
        more = await redis.xrange(stream, min=f"({last_read}", count=LAG_SCAN_MOST)
        lag = len(cast(list[object], more))
    firsts = [_ms(str(pending["min"]))] if pending["pending"] else []
    firsts += [_ms(str(unread[0][0]))] if unread else []
    return int(lag or 0) + int(pending["pending"]), min(firsts) if firsts else None


def _ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


async def sample_loop(redis: RedisClient, shards: int, stopping: asyncio.Event, every_s: float) -> None:
    """Publish the backlog and lag gauges every `every_s` until `stopping` is set. A failed sample keeps
    the last figures (Redis down shows on its own alerts)."""
    while not stopping.is_set():
        try:
            waiting, lag_s = await backlog(redis, shards)
            metrics.ARCHIVE_BACKLOG.set(waiting)
            metrics.ARCHIVE_LAG.set(lag_s)
        except (RedisError, OSError) as exc:
            log.debug("archive backlog sample failed: %s", type(exc).__name__)
        try:
            async with asyncio.timeout(every_s):
                await stopping.wait()
        except TimeoutError:
            pass
