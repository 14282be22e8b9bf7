"""The global outbound rate limit: every worker together stays under an appid's sends a second, so a
WeChat that enforces that frequency never answers 45011.

Here the simulator, gateway and workers share one event loop, so a send can wait behind any of them; the
guard before a second's end is widened so that a slow machine still never carries a send into the next one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio import Redis

from gateway.core.scripts import Scripts
from gateway.core.settings import RateLimit, Settings
from tests.support import APP_SECRET, APPID, eventually, make_event
from tests.workers.flows import StackFactory, until_status
from wechatsim.app import SimConfig
from workers import throttle, worker

QPS, EVENTS, CUSTOMERS = 40, 120, 12


@pytest.fixture(autouse=True)
def _wide_send_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(throttle, "SEND_GUARD_S", 0.4)


async def test_the_script_grants_at_most_the_limit_in_one_second(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    scripts = Scripts(settings_for())
    granted = [await scripts.throttle(redis, "wx_a", 10, 4) for _ in range(4)]
    if len({left for _, left in granted}) == len(granted) and granted[0][1] < granted[-1][1]:
        pytest.skip("a second boundary fell inside the calls")  # the grants then span two seconds
    assert [count for count, _ in granted] == [4, 4, 2, 0]
    assert all(0 < left <= 1000 for _, left in granted)
    assert (await scripts.throttle(redis, "wx_b", 10, 4))[0] == 4  # every appid has its own limit


@pytest.mark.parametrize("limit", [0, QPS])
async def test_two_workers_together_stay_under_wechats_frequency_limit(
    stack_for: StackFactory, limit: int
) -> None:
    stack = await stack_for(
        workers=0,
        sim_config=SimConfig(apps={APPID: APP_SECRET}, qps=QPS),
        wechat_max_sends_per_s=limit,
        rate_limit=RateLimit(1000, 60),
        max_attempts=20,
    )
    for index in range(CUSTOMERS):
        await stack.client.bind(f"C-thr-{index}", f"oUser_thr{index:03d}")
    events = [make_event(customer_id=f"C-thr-{n % CUSTOMERS}") for n in range(EVENTS)]
    status, _ = await stack.client.call("POST", "/v1/events/batch", {"events": events})
    assert status == 200
    stack.start_worker("w1")
    stack.start_worker("w2")

    async def refused() -> int:
        return int((await stack.sim("GET", "/sim/stats"))["errcodes"].get("45011", 0))

    if not limit:  # the same load without the limit: WeChat refuses some (they wait for the next minute)
        await eventually(lambda: _positive(refused()))
        return
    for event in events:
        await until_status(stack, event["event_id"], "delivered", timeout_s=60)
    assert await refused() == 0


async def test_every_send_takes_a_permit_the_repeat_after_a_token_refresh_too(
    stack_for: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    permits_taken = 0

    class CountedThrottle(throttle.Throttle):
        async def acquire(self) -> None:
            nonlocal permits_taken
            await super().acquire()
            permits_taken += 1

    monkeypatch.setattr(worker, "Throttle", CountedThrottle)
    stack = await stack_for(wechat_max_sends_per_s=QPS)
    await stack.client.bind("C-thr-token", "oUser_thr_token")
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 40001}]})
    event = make_event(customer_id="C-thr-token")
    await stack.client.post_event(event)

    assert (await until_status(stack, event["event_id"], "delivered"))["attempts"] == 1
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["errcodes"] == {"40001": 1, "0": 1}
    assert permits_taken == stats["calls"]["send"] == 2


async def _positive(count: Awaitable[int]) -> bool:
    return await count > 0
