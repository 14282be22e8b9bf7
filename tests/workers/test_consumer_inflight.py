"""The consumer against a real Redis: an entry of ours that XAUTOCLAIM returns while we still handle it is not
started a second time, and once stopping is set the loops read and claim nothing more, even when they were
waiting for a slot."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from redis.asyncio import Redis

from gateway.core import keys, metrics
from gateway.core.redis import ensure_groups
from tests.support import eventually
from workers.consumer import Consumer, Limits, Streams

CRITICAL, NORMAL = keys.stream(0, critical=True), keys.stream(0)
LOOPS_TIMEOUT_S = 10.0


class GatedHandler:
    """Holds every entry until the gate opens, counting the calls per (stream, entry id); acks each."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self.gate = asyncio.Event()
        self.calls: Counter[tuple[str, str]] = Counter()
        self.in_flight = 0
        self.most = 0

    async def __call__(self, shard: int, entry_id: str, fields: dict[str, str]) -> None:
        self.calls[fields["stream"], entry_id] += 1
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            await self._redis.xack(fields["stream"], keys.GROUP, entry_id)
        finally:
            self.in_flight -= 1


async def _consumer(redis: Redis, handler: GatedHandler, concurrency: int, reclaim_idle_s: int) -> Consumer:
    await ensure_groups(redis, 1)
    streams = Streams(keys.GROUP, ({CRITICAL: 0}, {NORMAL: 0}))
    limits = Limits(concurrency, concurrency, reclaim_idle_s, redis_timeout_s=1.0)
    return Consumer(redis, "c1", streams, handler, limits, metrics.INFLIGHT)


async def _add(redis: Redis, stream: str, entry_id: str = "*") -> str:
    added: Any = await redis.xadd(stream, {"stream": stream}, id=entry_id)
    return str(added)


async def _pending(redis: Redis) -> list[dict[str, Any]]:
    """The pending entries of both streams, each with its `stream` added."""
    entries: list[dict[str, Any]] = []
    for stream in (CRITICAL, NORMAL):
        found: Any = await redis.xpending_range(stream, keys.GROUP, min="-", max="+", count=100)
        entries.extend({**entry, "stream": stream} for entry in found)
    return entries


async def test_an_entry_reclaimed_from_ourselves_while_in_flight_is_not_started_again(redis: Redis) -> None:
    handler = GatedHandler(redis)
    concurrency = 8
    consumer = await _consumer(redis, handler, concurrency, reclaim_idle_s=1)
    # the same id on two streams: two entries, each to be handled once
    ids = [(CRITICAL, await _add(redis, CRITICAL, "1-1")), (NORMAL, await _add(redis, NORMAL, "1-1"))]
    ids.append((NORMAL, await _add(redis, NORMAL)))
    stopping = asyncio.Event()
    loops = [asyncio.create_task(loop(stopping)) for loop in (consumer.read_loop, consumer.reclaim_loop)]

    async def each_claimed_again_while_held() -> bool:
        entries = await _pending(redis)
        return len(entries) == len(ids) and all(entry["times_delivered"] >= 2 for entry in entries)

    await eventually(each_claimed_again_while_held)  # idle past reclaim_idle_s in our own pending list
    handler.gate.set()

    async def all_acked() -> bool:
        return consumer.handled >= len(ids) and not await _pending(redis)

    await eventually(all_acked)

    # the skipped claims gave their slots back (a full round runs at once) and took none extra (more entries
    # than slots wait: never more than `concurrency` in flight); the exact count is checked once stopped
    handler.gate.clear()
    handler.most = 0
    for _ in range(concurrency + 4):
        ids.append((NORMAL, await _add(redis, NORMAL)))

    async def slots_full() -> bool:
        return handler.in_flight >= concurrency

    await eventually(slots_full)
    assert handler.in_flight == concurrency
    handler.gate.set()
    await eventually(all_acked)

    stopping.set()
    await asyncio.wait_for(asyncio.gather(*loops), LOOPS_TIMEOUT_S)
    assert await consumer.drain(1.0) == 0
    assert handler.calls == dict.fromkeys(ids, 1)
    assert consumer.handled == len(ids)
    assert handler.most <= concurrency  # never more in flight than slots, at any moment
    # stopped and drained, every slot is free: one kept by a skipped claim, or given back twice, shows here
    assert consumer.free_slots == concurrency


async def test_loops_waiting_for_a_slot_when_stopping_is_set_read_and_claim_nothing(redis: Redis) -> None:
    handler = GatedHandler(redis)
    consumer = await _consumer(redis, handler, concurrency=2, reclaim_idle_s=30)
    # an entry a dead consumer left pending long ago: the reclaimer would claim it at once
    stale = await _add(redis, NORMAL)
    await redis.xreadgroup(keys.GROUP, "dead", {NORMAL: ">"}, count=1)
    await redis.xclaim(NORMAL, keys.GROUP, "dead", 0, [stale], idle=60_000)
    held = [await _add(redis, NORMAL), await _add(redis, NORMAL)]
    stopping = asyncio.Event()
    reader = asyncio.create_task(consumer.read_loop(stopping))

    async def slots_full() -> bool:
        return handler.in_flight == 2

    await eventually(slots_full)
    reclaimer = asyncio.create_task(consumer.reclaim_loop(stopping))
    for _ in range(3):  # let the reclaimer run up to its wait for a slot (it has no other await before it)
        await asyncio.sleep(0)

    stopping.set()
    fresh = [await _add(redis, NORMAL), await _add(redis, NORMAL)]
    handler.gate.set()  # the held entries end: their slots free up while both loops wait for them
    await asyncio.wait_for(asyncio.gather(reader, reclaimer), LOOPS_TIMEOUT_S)
    assert await consumer.drain(1.0) == 0

    assert handler.calls == {(NORMAL, entry_id): 1 for entry_id in held}
    assert [(entry["message_id"], entry["consumer"]) for entry in await _pending(redis)] == [(stale, "dead")]
    groups: Any = await redis.xinfo_groups(NORMAL)
    assert groups[0]["lag"] == len(fresh)  # never read: left for another worker
