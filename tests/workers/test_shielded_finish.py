"""A delivery cancelled while its outcome waits for the shared round trip (a shutdown cutting it off) still
has the outcome recorded and its entry acknowledged (`_finish` shields the queued item)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.entries import Entry
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.core.status import EventStatus
from tests.workers.flows import pending
from workers.breaker import Breaker
from workers.delivery import Deliverer, Sender
from workers.render import Templates
from workers.token import TokenCache
from workers.wechat import WeChatClient


async def _pending_entry(redis: Redis, event_id: str) -> Entry:
    """A stream entry read by a consumer (so it is pending) and its queued record."""
    await redis.hset(keys.event(0, "cbs", event_id), mapping={"status": "queued", "src": "cbs"})
    fields: dict[Any, Any] = {
        "kind": "event",
        "src": "cbs",
        "eid": event_id,
        "cid": "C1",
        "acc": "1",
        "att": "0",
    }
    await redis.xadd(keys.stream(0), fields)
    batch: Any = await redis.xreadgroup(keys.GROUP, "c1", {keys.stream(0): ">"}, count=1)
    entry_id, read = cast(list[tuple[str, dict[str, str]]], batch[0][1])[0]
    return Entry(0, entry_id, read)


@pytest.mark.parametrize("steps_before_cancel", [0, 1, 2])
async def test_a_cancelled_finish_is_still_recorded_and_acknowledged(
    redis: Redis, settings_for: Callable[..., Settings], steps_before_cancel: int
) -> None:
    settings = settings_for()
    await ensure_groups(redis, settings.shards)
    scripts = Scripts(settings)
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(session, "http://127.0.0.1:1", 1.0)
        tokens = TokenCache(redis, scripts, client, "wx_app", "secret", 120)
        deliverer = Deliverer(
            settings, redis, scripts, Sender(client, tokens, Breaker(3, 10.0), "wx_app"), Templates.load()
        )
        entry = await _pending_entry(redis, "E-cut")

        finishing = asyncio.create_task(
            deliverer._finish(entry, EventStatus.NO_BINDING, 0, error="no_binding")
        )
        # 0 steps: cancelled once the outcome is queued, before its round trip starts; more: while it is out
        for _ in range(1 + steps_before_cancel):
            await asyncio.sleep(0)
        assert not finishing.done()
        finishing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await finishing
        await deliverer.close()

    assert await redis.hget(keys.event(0, "cbs", "E-cut"), "status") == "no_binding"
    assert await pending(redis) == 0
