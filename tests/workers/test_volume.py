"""Delivery at volume: 3,000 events for 200 customers through single and batch requests, two workers over
two shards."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from datetime import datetime, timedelta, timezone
from importlib import resources
from typing import Any

import pytest

from gateway.core.event import EventType
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.support import eventually, sent_as
from tests.workers.flows import StackFactory, backlog, record_statuses

pytestmark = pytest.mark.e2e

CUSTOMERS = 200
SINGLE = 1500
BATCHED = 1500
BATCH_SIZE = 100
CONCURRENCY = 50
SHARDS = 2  # two delivery streams, so each worker reads several at once
TYPES = [t.value for t in EventType]
OFFSETS = [timedelta(hours=8), timedelta(0), timedelta(hours=-5), timedelta(hours=9, minutes=30)]
SHANGHAI = timezone(timedelta(hours=8))
PARTIES = ["Starbucks Shanghai", "上海某某科技有限公司", "A counterparty name much longer than twenty", None]


# the packaged templates, read at import (not in the test's event loop)
_TEMPLATES_TEXT = resources.files("workers").joinpath("templates.json").read_text(encoding="utf-8")


def _templates() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(_TEMPLATES_TEXT)
    return loaded


def _money(whole: int, cents: int, currency: str) -> str:
    number = f"{whole:,}.{cents:02d}"
    return f"{number}元" if currency == "CNY" else f"${number}"


class Plan:
    """The events to send, and for each the message the customer must see."""

    def __init__(self, seed: int = 2026) -> None:
        rng = random.Random(seed)
        self.openids = {f"C-vol-{c:03d}": f"oUser_vol_{c:03d}" for c in range(CUSTOMERS)}
        accounts = {cid: "".join(rng.choices("0123456789", k=rng.randint(12, 19))) for cid in self.openids}
        templates = _templates()
        self.events: list[dict[str, Any]] = []
        self.expected: dict[str, dict[str, Any]] = {}
        customers = list(self.openids)
        for index in range(SINGLE + BATCHED):
            cid = customers[index % CUSTOMERS]
            kind = TYPES[index % len(TYPES)]
            currency = "USD" if index % 7 == 0 else "CNY"
            whole, cents = rng.randint(0, 9_999_999), rng.randint(0, 99)
            balance = (rng.randint(0, 99_999), rng.randint(0, 99)) if index % 3 else None
            local = datetime(2026, 11, 22, 0, 0, tzinfo=SHANGHAI) + timedelta(minutes=rng.randint(0, 2880))
            party = PARTIES[index % len(PARTIES)]
            event: dict[str, Any] = {
                "event_id": f"VOL-{index:05d}",
                "customer_id": cid,
                "account": accounts[cid],
                "type": kind,
                "amount": f"{whole}.{cents:02d}",
                "currency": currency,
                "occurred_at": local.astimezone(timezone(OFFSETS[index % len(OFFSETS)])).isoformat(),
            }
            data = {
                "thing1": f"尾号{accounts[cid][-4:]}",
                "time2": f"{local:%Y年%m月%d日 %H:%M}",
                "phrase3": templates["labels"][kind],
                "amount4": _money(whole, cents, currency),
            }
            if balance is not None:
                event["balance"] = f"{balance[0]}.{balance[1]:02d}"
                data["amount5"] = _money(*balance, currency)
            if party is not None:
                event["counterparty"] = party
                data["thing6"] = party if len(party) <= 20 else party[:19] + "…"
            self.events.append(event)
            self.expected[event["event_id"]] = {
                "touser": self.openids[cid],
                "template_id": templates["event_templates"][kind],
                "data": {key: {"value": value} for key, value in data.items()},
            }


async def _post_single(stack: Stack, event: dict[str, Any], slots: asyncio.Semaphore) -> None:
    """Post like core banking: again on 503 (an answer that promises nothing), until accepted."""
    async with slots:
        while True:
            status, body = await stack.client.post_event(event)
            if status != 503:
                break
        assert (status, body["status"]) in {(202, "queued"), (200, "duplicate")}, body


async def _post_batch(stack: Stack, events: list[dict[str, Any]]) -> None:
    while True:
        status, body = await stack.client.call("POST", "/v1/events/batch", {"events": events})
        if status != 503:
            break
    assert status == 200, body
    assert [result["event_id"] for result in body["results"]] == [event["event_id"] for event in events]
    assert {result["status"] for result in body["results"]} <= {"queued", "duplicate"}


async def test_every_event_is_delivered_once_and_rendered_right(stack_for: StackFactory) -> None:
    plan = Plan()
    stack = await stack_for(workers=2, shards=SHARDS, rate_limit=RateLimit(1000, 60))
    await asyncio.gather(*(stack.client.bind(cid, openid) for cid, openid in plan.openids.items()))

    slots = asyncio.Semaphore(CONCURRENCY)
    singles, batched = plan.events[:SINGLE], plan.events[SINGLE:]
    await asyncio.gather(
        *(_post_single(stack, event, slots) for event in singles),
        *(_post_batch(stack, batched[i : i + BATCH_SIZE]) for i in range(0, BATCHED, BATCH_SIZE)),
    )

    async def all_delivered() -> bool:
        return int((await stack.sim("GET", "/sim/stats"))["delivered"]) >= len(plan.events)

    await eventually(all_delivered, timeout_s=60, step_s=0.2)

    async def settled() -> bool:
        statuses = await record_statuses(stack.redis, plan.events, SHARDS)
        return await backlog(stack.redis, SHARDS) == 0 and set(statuses.values()) == {"delivered"}

    await eventually(settled, timeout_s=30, step_s=0.2)

    messages: list[dict[str, Any]] = (await stack.sim("GET", "/sim/messages"))["messages"]
    event_of = {sent_as(event): event["event_id"] for event in plan.events}  # each event's client_msg_id
    assert Counter(event_of.get(m["client_msg_id"]) for m in messages) == Counter(plan.expected.keys())
    accounts = {event["event_id"]: event["account"] for event in plan.events}
    for message in messages:
        event_id = event_of[message["client_msg_id"]]
        got = {"touser": message["touser"], "template_id": message["template_id"], "data": message["data"]}
        assert got == plan.expected[event_id], event_id
        assert accounts[event_id] not in json.dumps(message, ensure_ascii=False)

    stats = await stack.sim("GET", "/sim/stats")
    assert stats["delivered"] == len(plan.events) == len(messages)
    # every send was answered 0 (no faults): a first delivery, or a repeat the simulator deduplicated
    assert stats["errcodes"] == {"0": stats["calls"]["send"]}
    assert stats["calls"]["send"] == stats["delivered"] + stats["deduplicated"]
    views = [await stack.client.call("GET", f"/v1/events/{e['event_id']}") for e in plan.events[::100]]
    assert {(status, body["status"], body["attempts"]) for status, body in views} == {(200, "delivered", 1)}
