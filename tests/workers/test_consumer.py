"""The consumer's slots against a real Redis: at most `concurrency` deliveries at once over every shard's
stream, slots given back as deliveries end, and `drain` leaving what outlives its deadline pending."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.entries import Entry
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from tests.support import eventually
from tests.workers.flows import pending
from workers.breaker import Breaker
from workers.delivery import Deliverer, Sender, delivery_consumer
from workers.render import Templates
from workers.token import TokenCache
from workers.wechat import WeChatClient

CONCURRENCY = 4


class GatedDeliverer(Deliverer):
    """Holds every delivery until the gate opens, counting how many are in flight at once; acks each."""

    def __init__(self, settings: Settings, redis: Redis, sender: Sender) -> None:
        super().__init__(settings, redis, Scripts(settings), sender, Templates.load())
        self.gate = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.done = 0

    async def deliver(self, entry: Entry) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await self.gate.wait()
            await self._redis.xack(keys.stream(entry.shard), keys.GROUP, entry.entry_id)
            self.done += 1
        finally:
            self.in_flight -= 1


Build = Callable[[int], GatedDeliverer]


@pytest.fixture
async def gated(redis: Redis, settings_for: Callable[..., Settings]) -> AsyncIterator[tuple[Settings, Build]]:
    settings = settings_for(shards=2, worker_concurrency=CONCURRENCY, read_batch=CONCURRENCY)
    await ensure_groups(redis, settings.shards)
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(session, "http://127.0.0.1:1", 1.0)
        tokens = TokenCache(redis, Scripts(settings), client, "wx_app", "secret", 120)
        sender = Sender(client, tokens, Breaker(3, 10.0), "wx_app")

        def build(_: int) -> GatedDeliverer:
            return GatedDeliverer(settings, redis, sender)

        yield settings, build


async def _fill(redis: Redis, per_shard: int) -> None:
    for shard in (0, 1):
        for index in range(per_shard):
            await redis.xadd(keys.stream(shard), {"kind": "event", "eid": f"E{shard}-{index}", "cid": "C"})


async def test_reads_over_several_shards_never_exceed_the_concurrency(
    redis: Redis, gated: tuple[Settings, Build]
) -> None:
    settings, build = gated
    deliverer = build(0)
    consumer = delivery_consumer(settings, redis, deliverer, "c1")
    stopping = asyncio.Event()
    await _fill(redis, 10)
    reader = asyncio.create_task(consumer.read_loop(stopping))

    async def slots_full() -> bool:
        return deliverer.in_flight >= CONCURRENCY

    async def all_done(count: int) -> Callable[[], Any]:
        async def check() -> bool:
            return deliverer.done >= count

        return check

    for round_ in (1, 2):  # a second round shows the slots were given back, not multiplied
        await eventually(slots_full)
        # the blocking read spans both tiers of every shard: up to one entry more per stream but one
        assert deliverer.most <= CONCURRENCY + 2 * settings.shards - 1
        deliverer.gate.set()
        await eventually(await all_done(20 * round_))
        deliverer.gate.clear()
        deliverer.most = 0
        if round_ == 1:
            await _fill(redis, 10)

    stopping.set()
    deliverer.gate.set()
    await reader
    assert await pending(redis, settings.shards) == 0


async def test_drain_cuts_deliveries_past_the_deadline_and_leaves_them_pending(
    redis: Redis, gated: tuple[Settings, Build]
) -> None:
    settings, build = gated
    deliverer = build(0)
    consumer = delivery_consumer(settings, redis, deliverer, "c1")
    stopping = asyncio.Event()
    await _fill(redis, 1)
    reader = asyncio.create_task(consumer.read_loop(stopping))

    async def both_started() -> bool:
        return deliverer.in_flight == 2

    await eventually(both_started)
    stopping.set()
    await reader
    assert await consumer.drain(0.05) == 2
    assert deliverer.in_flight == 0
    assert await pending(redis, settings.shards) == 2  # left for another worker to reclaim
