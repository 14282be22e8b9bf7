"""The benchmark's archive measure: does the archiver keep up with delivery, and with how much room?

Two runs of one `pushgw worker` process with PUSHGW_ARCHIVE_URL set, against a PostgreSQL with its
default durability (fsync, synchronous commit):
- with deliveries: on the backlog the ingress runs left, delivered/s (the simulator's count) beside archived
  rows/s (rows PostgreSQL holds) over the same window;
- the archive drain alone: an archive backlog of `rows` record snapshots (copies of a delivered record,
  each its own event) and nothing to deliver, rows/s from the first row written to the last.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import aiohttp
import asyncpg
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.archive import schema

POLL_S = 0.05


async def migrated(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()


async def _rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM archive_events"))
    finally:
        await conn.close()


async def _backlog(redis: Redis) -> int:
    groups: Any = await redis.xinfo_groups(keys.archive(0))
    return sum(int(g.get("lag") or 0) + int(g["pending"]) for g in groups if g["name"] == keys.ARCHIVE_GROUP)


async def _delivered(session: aiohttp.ClientSession, sim_url: str) -> int:
    async with session.get(f"{sim_url}/sim/stats") as response:
        return int((await response.json())["delivered"])


async def with_deliveries(worker: Any, seconds: float, sim_url: str, archive_url: str) -> tuple[float, float]:
    """(delivered/s, archived rows/s) over the same `seconds` of a running worker (after its start-up)."""
    async with aiohttp.ClientSession() as session:
        await asyncio.sleep(1.0)  # start-up and token fetch are not throughput
        delivered, rows, started = (
            await _delivered(session, sim_url),
            await _rows(archive_url),
            time.monotonic(),
        )
        await asyncio.sleep(seconds)
        delivered_end, rows_end = await _delivered(session, sim_url), await _rows(archive_url)
        elapsed = time.monotonic() - started
    return (delivered_end - delivered) / elapsed, (rows_end - rows) / elapsed


async def fill_backlog(redis_url: str, rows: int) -> None:
    """Leave nothing to deliver, and `rows` snapshots of a delivered record on the archive stream."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        for critical in (True, False):
            await redis.delete(keys.stream(0, critical))
        snapshot = await _a_delivered_record(redis)
        for start in range(0, rows, 1000):
            async with redis.pipeline(transaction=False) as pipe:
                for index in range(start, min(start + 1000, rows)):
                    entry: dict[Any, Any] = {**snapshot, "eid": f"{snapshot['eid']}-a{index}"}
                    pipe.xadd(keys.archive(0), entry)
                await pipe.execute()
    finally:
        await redis.aclose()


async def _a_delivered_record(redis: Redis) -> dict[str, str]:
    async for key in redis.scan_iter(match=keys.event(0, "*", "*"), count=1000):
        record = cast(dict[str, str], await redis.hgetall(key))
        if record.get("status") == "delivered" and "arch_v" in record:
            return {name: value for name, value in record.items() if name not in ("hash", "to_hash")}
    raise RuntimeError("no delivered record to copy: run the deliveries first")


async def drain_rate(redis_url: str, rows: int, timeout_s: float = 120.0) -> float:
    """Rows/s a running archiver drains the archive backlog at: from the first row written to the last."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout_s
        first: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            left = await _backlog(redis)
            now = time.monotonic()
            if first is None and left < rows:
                first = (now, left)
            if left == 0 and first is not None:
                return (first[1] / (now - first[0])) if now > first[0] else float("nan")
            await asyncio.sleep(POLL_S)
    finally:
        await redis.aclose()
    return float("nan")
