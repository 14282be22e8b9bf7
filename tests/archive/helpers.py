"""Reading the archive and its backlog in tests."""

from __future__ import annotations

from typing import Any

import asyncpg
from prometheus_client.metrics import MetricWrapperBase

from gateway.core import keys
from gateway.core.redis import RedisClient
from tests.support import eventually


async def archived(url: str) -> list[dict[str, Any]]:
    """Every archived row, as dicts, by (source, event id)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT * FROM archive_events ORDER BY source, event_id")
    finally:
        await conn.close()
    return [dict(row) for row in rows]


async def archive_backlog(redis: RedisClient, shards: int = 1) -> int:
    """Archive stream entries not yet acknowledged by the archiver group (unread or pending)."""
    total = 0
    for shard in range(shards):
        stream = keys.archive(shard)
        if not await redis.exists(stream):
            continue
        groups: Any = await redis.xinfo_groups(stream)
        for group in groups:
            if group["name"] == keys.ARCHIVE_GROUP:
                total += int(group.get("lag") or 0) + int(group["pending"])
    return total


async def until_archived(
    redis: RedisClient, url: str, count: int, timeout_s: float = 30.0, shards: int = 1
) -> list[dict[str, Any]]:
    """Wait until the archive holds `count` rows and nothing waits in the archive streams."""

    async def done() -> bool:
        return await archive_backlog(redis, shards) == 0 and len(await archived(url)) >= count

    await eventually(done, timeout_s=timeout_s, step_s=0.1)
    return await archived(url)


def sample(metric: MetricWrapperBase, **labels: str) -> float:
    """A metric's value read from the metric itself (the registry would also read /proc in the loop)."""
    for family in metric.collect():
        for found in family.samples:
            if found.labels == labels and not found.name.endswith("_created"):
                return float(found.value)
    return 0.0
