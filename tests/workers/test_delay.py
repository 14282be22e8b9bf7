"""`Deliverer._delay_s`: how long a retry waits for each kind of answer (no Redis or WeChat is called)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.breaker import Breaker
from workers.delivery import SUSPEND_S, Deliverer, Sender
from workers.render import SHANGHAI, Templates
from workers.token import TokenCache
from workers.wechat import Wait, WeChatClient

APP = "wx_delay_app"


class Draws:
    """A uniform source that answers a fixed fraction of each range and records the ranges asked."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction
        self.ranges: list[tuple[float, float]] = []

    def __call__(self, low: float, high: float) -> float:
        self.ranges.append((low, high))
        return low + (high - low) * self.fraction


Build = Callable[[float], tuple[Deliverer, Draws, Breaker]]


@pytest.fixture
async def build() -> AsyncIterator[Build]:
    settings = Settings(retry_base_s=0.5, retry_cap_s=30.0, wechat_appid=APP)
    redis = Redis.from_url("redis://127.0.0.1:1/0")  # never connected: _delay_s touches no Redis
    async with aiohttp.ClientSession() as session:
        client = WeChatClient(session, "http://127.0.0.1:1", 1.0)
        scripts = Scripts(settings)

        def make(fraction: float) -> tuple[Deliverer, Draws, Breaker]:
            draws = Draws(fraction)
            breaker = Breaker(3, 10.0)
            tokens = TokenCache(redis, scripts, client, APP, "secret", 120)
            sender = Sender(client, tokens, breaker, APP)
            return Deliverer(settings, redis, scripts, sender, Templates.load(), draws), draws, breaker

        yield make
    await redis.aclose()


def test_backoff_uses_the_settings_schedule(build: Build) -> None:
    deliverer, draws, _ = build(1.0)
    delays = [deliverer._delay_s(attempt, Wait.BACKOFF) for attempt in range(1, 10)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert {low for low, _ in draws.ranges} == {0.0}


def _next_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0) + timedelta(minutes=1)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_minute_quota_waits_past_the_next_minute_boundary(build: Build, fraction: float) -> None:
    deliverer, draws, breaker = build(fraction)
    while True:
        before = datetime.now(SHANGHAI)
        delay_s = deliverer._delay_s(1, Wait.NEXT_MINUTE)
        after = datetime.now(SHANGHAI)
        if _next_minute(before) == _next_minute(after):  # measured within one minute
            break
    boundary = _next_minute(before)
    assert after + timedelta(seconds=delay_s) >= boundary
    assert before + timedelta(seconds=delay_s) <= boundary + timedelta(seconds=6)
    assert draws.ranges == [(0.0, 5.0)]
    # the appid pauses until the boundary too: every send before it would be refused with 45011
    assert delay_s - 5.0 - 0.5 <= breaker.blocked_for_s(APP) <= delay_s - 5.0 * fraction


def test_daily_quota_waits_until_shanghai_midnight_and_pauses_the_appid(build: Build) -> None:
    deliverer, draws, breaker = build(0.0)
    before = datetime.now(SHANGHAI)
    delay_s = deliverer._delay_s(1, Wait.QUOTA_RESET)
    midnight = (before + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert (midnight - before).total_seconds() - 1 <= delay_s <= (midnight - before).total_seconds()
    assert draws.ranges == [(0.0, 60.0)]
    assert delay_s - 1 <= breaker.blocked_for_s(APP) <= delay_s


def test_suspension_pauses_the_appid(build: Build) -> None:
    deliverer, draws, breaker = build(1.0)
    assert deliverer._delay_s(1, Wait.SUSPEND) == SUSPEND_S + 10.0
    assert draws.ranges == [(0.0, 10.0)]
    assert SUSPEND_S - 1 <= breaker.blocked_for_s(APP) <= SUSPEND_S
