"""The queue monitor: reads each shard's stream, consumer group, retry set and dead letters from Redis.

Every worker samples every `QUEUE_SAMPLE_S` and publishes through `metrics.QUEUE`, so the backlog gauges
are what Redis holds. With several workers each reports the same figures: dashboards and alerts take
`max by (shard)`. Ages use Redis `TIME`, so a skewed worker clock does not make a backlog look old.
On a Redis Cluster each shard's figures come from the node owning its slot, and the Redis health from every
primary: memory of the fullest one, commands and clients summed, AOF and eviction as the weakest one says.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.core import keys, metrics
from gateway.core.redis import RedisClient
from workers.consumer import sleep_or_stop

log = logging.getLogger(__name__)
QUEUE_SAMPLE_S = 5.0
ACTIVE_CONSUMER_IDLE_S = 60.0  # a live consumer polls every second or so
LAG_SCAN_MOST = 10_000


class QueueMonitor:
    def __init__(self, redis: RedisClient, shards: int) -> None:
        self._redis = redis
        self._shards = shards

    async def loop(self, stopping: asyncio.Event) -> None:
        """Sample until `stopping` is set; a failed sample publishes `pushgw_redis_up 0`."""
        failing = False
        while not stopping.is_set():
            try:
                snapshot = await self.sample()
                metrics.QUEUE.update(snapshot)
                metrics.REDIS_DURABLE.set(1 if snapshot.redis.durable else 0)
                failing = False
            except (RedisError, OSError) as exc:
                metrics.QUEUE.update(None)
                if not failing:
                    log.warning("queue sample failed: %s", type(exc).__name__)
                failing = True
            await sleep_or_stop(stopping, QUEUE_SAMPLE_S)

    async def sample(self) -> metrics.QueueSnapshot:
        """One snapshot of every shard and of Redis itself. Raises RedisError when Redis cannot be read."""
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        shards = tuple([await self._shard(shard, now_ms) for shard in range(self._shards)])
        return metrics.QueueSnapshot(shards=shards, redis=_health(await self._info()))

    async def _info(self) -> dict[str, Any]:
        if not isinstance(self._redis, RedisCluster):
            return await self._redis.info()
        nodes = self._redis.get_primaries()
        return _combined(list(await asyncio.gather(*(self._redis.info(target_nodes=node) for node in nodes))))

    async def _shard(self, shard: int, now_ms: int) -> metrics.ShardQueue:
        stream = keys.stream(shard)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(stream)
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, keys.GROUP)
            pipe.xinfo_consumers(stream, keys.GROUP)
            pipe.zcard(keys.retries(shard))
            pipe.xlen(keys.dead_letters(shard))
            pipe.zcard(keys.digest_due(shard))
            pipe.zcard(keys.notice_retries(shard))
            pipe.xlen(keys.notice_dead_letters(shard))
            pipe.xinfo_groups(keys.stream(shard, critical=True))
            pipe.xpending(keys.stream(shard, critical=True), keys.GROUP)
            length, groups, pending, consumers, retries, dead, digests, *more = await pipe.execute()
        notice_retries, notice_dead, critical_groups, critical_pending = more
        critical_lag = _our_group(critical_groups).get("lag") or 0
        group = _our_group(groups)
        last_read = str(group["last-delivered-id"])
        unread = await self._unread(stream, last_read, 1)
        lag = group.get("lag")
        if lag is None:  # Redis cannot tell (entries deleted mid-stream): count what is unread, capped
            lag = len(await self._unread(stream, last_read, LAG_SCAN_MOST)) if unread else 0
        active = [c for c in consumers if int(c["idle"]) < ACTIVE_CONSUMER_IDLE_S * 1000]
        return metrics.ShardQueue(
            shard=shard,
            stream_length=int(length),
            lag=int(lag),
            pending=int(pending["pending"]),
            oldest_pending_age_s=_age_s(pending["min"] if pending["pending"] else None, now_ms),
            oldest_unread_age_s=_age_s(unread[0] if unread else None, now_ms),
            consumers=len(consumers),
            active_consumers=len(active),
            scheduled_retries=int(retries),
            dead_letters=int(dead),
            digests_held=int(digests),
            notice_retries=int(notice_retries),
            notice_dead_letters=int(notice_dead),
            critical_waiting=int(critical_lag) + int(critical_pending["pending"]),
        )

    async def _unread(self, stream: str, last_read: str, count: int) -> list[str]:
        """Ids of the first `count` entries after the group's last read one."""
        entries = await self._redis.xrange(stream, min=f"({last_read}", count=count)
        return [str(entry_id) for entry_id, _ in entries or []]


def _our_group(groups: list[dict[str, Any]]) -> dict[str, Any]:
    for group in groups:
        if group["name"] == keys.GROUP:
            return group
    raise RedisError(f"consumer group {keys.GROUP} is missing")  # ensure_groups makes it at start


def _age_s(entry_id: str | None, now_ms: int) -> float:
    """Seconds since a stream entry id's timestamp (0 for None)."""
    if entry_id is None:
        return 0.0
    return max(0, now_ms - int(entry_id.partition("-")[0])) / 1000


def _combined(infos: list[dict[str, Any]]) -> dict[str, Any]:
    """The INFO of a cluster's primaries as one: the fullest node's memory, summed load, the weakest
    persistence and eviction."""

    def fill(info: dict[str, Any]) -> float:
        used, most = int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))
        return used / most if most else used / 2**60

    fullest = max(infos, key=fill)
    policies = [str(info.get("maxmemory_policy", "noeviction")) for info in infos]
    return {
        "used_memory": fullest.get("used_memory", 0),
        "maxmemory": fullest.get("maxmemory", 0),
        "total_commands_processed": sum(int(info.get("total_commands_processed", 0)) for info in infos),
        "connected_clients": sum(int(info.get("connected_clients", 0)) for info in infos),
        "aof_enabled": int(all(int(info.get("aof_enabled", 0)) for info in infos)),
        "aof_last_write_status": "ok"
        if all(info.get("aof_last_write_status", "ok") == "ok" for info in infos)
        else "err",
        "maxmemory_policy": next((policy for policy in policies if policy != "noeviction"), "noeviction"),
    }


def _health(info: dict[str, Any]) -> metrics.RedisHealth:
    return metrics.RedisHealth(
        used_memory_bytes=int(info.get("used_memory", 0)),
        maxmemory_bytes=int(info.get("maxmemory", 0)),
        commands_processed=int(info.get("total_commands_processed", 0)),
        connected_clients=int(info.get("connected_clients", 0)),
        aof_enabled=bool(int(info.get("aof_enabled", 0))),
        aof_last_write_ok=str(info.get("aof_last_write_status", "ok")) == "ok",
        evicts=str(info.get("maxmemory_policy", "noeviction")) != "noeviction",
    )
