"""A flood of events through the whole pipeline (gateway, Redis, worker, simulated WeChat, callback receiver)
reaches PostgreSQL: every final state archived exactly once, with the state and timeline Redis holds."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from gateway.core import clock, keys, metrics
from gateway.core.archive.rows import ms_of
from gateway.core.scripts import Scripts
from gateway.core.settings import RateLimit
from tests.archive.helpers import archive_backlog, archived, sample, until_archived
from tests.support import KEY_ID, SECRET, eventually, make_event
from tests.webhook_receiver import WebhookReceiver
from tests.workers.flows import StackFactory

pytestmark = pytest.mark.e2e
FINAL = {"delivered", "failed", "dead_lettered", "no_binding", "suppressed"}
BOUND = 30


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver([SECRET]).start()
    yield started
    await started.stop()


def _events() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The flood, and the state each event must end in (suppressed, no_binding, failed, delivered)."""
    events, expected = [], {}
    for index in range(180):  # bound customers: delivered, some with an SMS fallback notice
        event = make_event(customer_id=f"C-arch-{index % BOUND}", fallback="sms" if index % 9 == 0 else None)
        events.append(event)
        expected[event["event_id"]] = "delivered"
    for index in range(10):
        event = make_event(customer_id=f"C-unbound-{index}")
        events.append(event)
        expected[event["event_id"]] = "no_binding"
    for _ in range(5):
        event = make_event(customer_id="C-muted", type="refund")
        events.append(event)
        expected[event["event_id"]] = "suppressed"
    for _ in range(5):
        event = make_event(customer_id="C-gone")
        events.append(event)
        expected[event["event_id"]] = "failed"
    return events, expected


async def test_a_flood_is_archived_once_each_with_its_final_state_and_timeline(
    stack_for: StackFactory, archive_url: str, receiver: WebhookReceiver
) -> None:
    stack = await stack_for(
        workers=1,
        archive_url=archive_url,
        callback_urls={KEY_ID: receiver.url},
        rate_limit=RateLimit(1000, 1),
    )
    for index in range(BOUND):
        await stack.client.bind(f"C-arch-{index}", f"oUser_arch{index:02d}")
    for customer in ("C-muted", "C-gone"):
        await stack.client.bind(customer, f"oUser_{customer[2:]}")
    await stack.sim("POST", "/sim/unsubscribe", {"openid": "oUser_gone"})
    status, _ = await stack.client.call(
        "PUT", "/v1/customers/C-muted/preferences", {"muted_types": ["refund"]}
    )
    assert status == 200
    events, expected = _events()
    written_before = sample(metrics.ARCHIVE_ROWS, result="written")

    for start in range(0, len(events), 50):
        status, body = await stack.client.call(
            "POST", "/v1/events/batch", {"events": events[start : start + 50]}
        )
        assert status == 200 and all(r["status"] in {"queued", "suppressed"} for r in body["results"]), body

    async def final() -> bool:
        async with stack.redis.pipeline(transaction=False) as pipe:
            for event in events:
                pipe.hget(keys.event(0, KEY_ID, event["event_id"]), "status")
            return all(status in FINAL for status in await pipe.execute())

    await eventually(final, timeout_s=30)
    await eventually(lambda: _notices_done(stack.redis, events), timeout_s=20)
    rows = await until_archived(stack.redis, archive_url, len(events))

    assert len(rows) == len(events), "an event archived twice, or one missing"
    by_id = {row["event_id"]: row for row in rows}
    assert set(by_id) == set(expected)
    for event in events:
        record = cast(dict[str, str], await stack.redis.hgetall(keys.event(0, KEY_ID, event["event_id"])))
        row = by_id[event["event_id"]]
        assert row["status"] == record["status"] == expected[event["event_id"]], event["event_id"]
        assert row["version"] == int(record["arch_v"]), "the archive holds an older state than Redis"
        assert ms_of(row["accepted_at"]) == int(record["accepted_ms"])
        assert (row["customer_id"], row["account_tail"], str(row["amount"])) == (
            event["customer_id"],
            event["account"][-4:],
            event["amount"],
        )
        assert row["notice"] == record.get("notice")
    assert {row["notice"] for row in rows if row["event_id"] in _fallback_ids(events)} == {"sent"}
    written = sample(metrics.ARCHIVE_ROWS, result="written") - written_before
    assert written >= len(events)
    assert not await archive_backlog(stack.redis)


async def _notices_done(redis: Any, events: list[dict[str, Any]]) -> bool:
    states = [await redis.hget(keys.event(0, KEY_ID, eid), "notice") for eid in _fallback_ids(events)]
    return all(state == "sent" for state in states)


def _fallback_ids(events: list[dict[str, Any]]) -> list[str]:
    return [event["event_id"] for event in events if event.get("fallback") == "sms"]


async def test_digested_events_and_wechat_finish_events_reach_the_archive(
    stack_for: StackFactory, archive_url: str
) -> None:
    stack = await stack_for(workers=1, archive_url=archive_url, rate_limit=RateLimit(2, 1))
    await stack.client.bind("C-digest", "oUser_digest")
    events = [make_event(customer_id="C-digest") for _ in range(5)]
    answers = [(await stack.client.post_event(event))[1]["status"] for event in events]
    assert answers == ["queued", "queued", "digested", "digested", "digested"]
    rows = await until_archived(stack.redis, archive_url, len(events))
    assert {row["status"] for row in rows} == {"delivered"}
    assert sorted(str(row["held"]) for row in rows) == [
        "None",
        "None",
        "rate_limit",
        "rate_limit",
        "rate_limit",
    ]

    # WeChat's TEMPLATESENDJOBFINISH for one of them: the same script the callback handler runs
    record_key = keys.event(0, KEY_ID, events[0]["event_id"])
    record = cast(dict[str, str], await stack.redis.hgetall(record_key))
    matched, updated = await Scripts(stack.settings).finish_event(
        stack.redis,
        0,
        [record_key],
        "success",
        clock.now_ms(),
        msgid=record["msgid"],
        to_hash=record["to_hash"],
    )
    assert (matched, updated) == (1, 1)

    async def finished() -> bool:
        row = next(r for r in await archived(archive_url) if r["event_id"] == events[0]["event_id"])
        return bool(row["finish_status"] == "success" and row["version"] == 2)

    await eventually(finished, timeout_s=10)
    status, timeline = await stack.client.call("GET", "/v1/customers/C-digest/events")
    assert status == 200
    digested = [
        event for event in timeline["events"] if any(s["state"] == "digested" for s in event["timeline"])
    ]
    assert len(digested) == 3 and all(event["status"] == "delivered" for event in digested)


async def test_without_an_archive_nothing_is_handed_over(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=1)
    await stack.client.bind("C100234", "oUser_noarchive")
    event = make_event()
    assert (await stack.client.post_event(event))[0] == 202

    async def delivered() -> bool:
        return await stack.status_of(event["event_id"]) == "delivered"

    await eventually(delivered)
    assert await stack.redis.xlen(keys.archive(0)) == 0
    assert await stack.redis.hget(keys.event(0, KEY_ID, event["event_id"]), "arch_v") is None
