"""A hot customer flooding the gateway (thousands of events, digest policy) does not delay other customers'
alerts: theirs go out while the hot customer's are still being folded into digests.

Judged by order, not by the clock: every other customer's alert accepted during the flood overtakes hot
events accepted before it (with one FIFO queue it would wait behind all of them), and the others' latency
(accepted -> delivered, from their records) is compared with a baseline measured in the same test.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import pytest

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import FINAL, Oracle
from tests.support import KEY_ID, eventually, make_event
from tests.workers.flows import StackFactory

pytestmark = pytest.mark.e2e

HOT = "C-hot"
FLOOD = 2000
BATCH = 250
OTHERS = 60
RATE = RateLimit(10, 1)  # 10 messages a second per customer; a digest carries up to 50 events


async def _times(stack: Stack, events: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(accepted_ms, delivered_ms) of each event, from its record (Redis TIME on both ends)."""
    async with stack.redis.pipeline(transaction=False) as pipe:
        for event in events:
            pipe.hmget(keys.event(0, KEY_ID, event["event_id"]), ["accepted_ms", "delivered_ms"])
        found = await pipe.execute()
    return [(int(accepted), int(delivered)) for accepted, delivered in found]


async def _all_final(oracle: Oracle, events: list[dict[str, Any]]) -> bool:
    statuses = await oracle.statuses()
    return all(statuses[event["event_id"]] in FINAL for event in events)


async def _flood(oracle: Oracle, events: list[dict[str, Any]]) -> None:
    for start in range(0, len(events), BATCH):
        assert await oracle.post_batch(events[start : start + BATCH]) == 200


def _latencies_ms(times: list[tuple[int, int]]) -> list[int]:
    return [delivered - accepted for accepted, delivered in times]


async def test_a_hot_customer_does_not_delay_other_customers_alerts(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=1, rate_limit=RATE)
    oracle = Oracle(
        stack,
        "hot customer flood",
        f"{FLOOD} events of one customer in batches of {BATCH}, {OTHERS}+{OTHERS} alerts of 20 others",
    )
    customers = await bind_customers(oracle, 20, "calm")
    await oracle.bind(HOT, "oUser_hot")

    baseline = events_for(customers, OTHERS)  # the others alone
    assert set(await send_all(oracle, baseline, concurrency=4)) == {202}
    await eventually(lambda: _all_final(oracle, baseline), timeout_s=30)

    hot = [make_event(customer_id=HOT) for _ in range(FLOOD)]
    flooding = asyncio.create_task(_flood(oracle, hot))
    held = keys.digest_held(0, HOT)

    async def digesting() -> bool:
        return int(await stack.redis.llen(held)) > 0

    await eventually(digesting, timeout_s=30)
    during = events_for(customers, OTHERS)  # the others while the hot customer is being digested
    assert set(await send_all(oracle, during, concurrency=4)) == {202}
    await eventually(lambda: _all_final(oracle, during), timeout_s=30)
    still_held = int(await stack.redis.llen(held))
    await flooding

    counts = await oracle.verdict(timeout_s=90)
    hot_times = await _times(stack, hot)
    calm_before = _latencies_ms(await _times(stack, baseline))
    during_times = await _times(stack, during)
    calm_during = _latencies_ms(during_times)
    # each alert of the others overtook hot events accepted before it, delivered only after it
    overtaken = [
        sum(1 for accepted, delivered in hot_times if accepted < mine and delivered > done)
        for mine, done in during_times
    ]
    counts.notes.update(
        hot_held_when_others_done=still_held,
        others_median_ms_alone=statistics.median(calm_before),
        others_median_ms_during=statistics.median(calm_during),
        others_max_ms_during=max(calm_during),
        least_hot_events_overtaken=min(overtaken),
        hot_messages=len(await stack.delivered_to("oUser_hot")),
    )
    assert counts.delivered == counts.accepted == FLOOD + 2 * OTHERS
    assert still_held > 0, "the hot customer's digests were done before the others' alerts"
    assert min(overtaken) > 0, "an alert waited behind the hot customer's earlier events"
    # in one FIFO queue they would wait behind the hot customer's thousands: a hundredfold and more
    assert statistics.median(calm_during) <= 10 * max(statistics.median(calm_before), 1)
