"""Status notices to core banking (its SMS fallback) end to end: gateway, worker, simulated WeChat and a
callback receiver written from the Standard Webhooks specification, all real servers on loopback.

Every notice the receiver counts has passed its own signature and timestamp checks; "exactly one" is after
deduplication by webhook-id (what a receiver acts on), and raw deliveries are counted beside it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from tests.conftest import Stack
from tests.support import KEY_ID, SECRET, eventually, make_event
from tests.webhook_receiver import Received, WebhookReceiver
from tests.workers.flows import pushgw, until_status

pytestmark = pytest.mark.e2e
log = logging.getLogger(__name__)

# time compression of the receiver-outage test: 1 s of the test stands for COMPRESSION s of production,
# and the retry schedule is the production default (base 1 s, cap 300 s) divided by the same factor
COMPRESSION = 20
OUTAGE_S = 60 / COMPRESSION
OUTAGE_EVENTS = 20


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    started = await WebhookReceiver([SECRET]).start()
    yield started
    await started.stop()


async def _stack(stack_for: Callable[..., Any], receiver: WebhookReceiver, **overrides: Any) -> Stack:
    stack: Stack = await stack_for(callback_urls={KEY_ID: receiver.url}, **overrides)
    return stack


async def _record(redis: Redis, event: dict[str, Any]) -> dict[str, str]:
    return cast(dict[str, str], await redis.hgetall(keys.event(0, KEY_ID, event["event_id"])))


async def _notified(
    stack: Stack, receiver: WebhookReceiver, event: dict[str, Any], state: str = "sent"
) -> None:
    """Wait until the receiver verified a notice about `event` and its record says `notice` = `state`."""

    async def arrived() -> bool:
        return bool(receiver.of_event(event["event_id"])) and (
            (await _record(stack.redis, event)).get("notice") == state
        )

    await eventually(arrived)


def _only(receiver: WebhookReceiver, event: dict[str, Any]) -> Received:
    [notice] = receiver.of_event(event["event_id"])
    return notice


async def test_no_binding_wechat_failure_and_dead_letter_each_notify_once(
    stack_for: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    stack = await _stack(stack_for, receiver)
    await stack.client.bind("C-unsub", "oUser_unsub")
    await stack.sim("POST", "/sim/unsubscribe", {"openid": "oUser_unsub"})
    unbound = make_event(customer_id="C-nobody")
    unsubscribed = make_event(customer_id="C-unsub")
    for event in (unbound, unsubscribed):
        assert (await stack.client.post_event(event))[0] == 202
    await until_status(stack, unbound["event_id"], "no_binding")
    await until_status(stack, unsubscribed["event_id"], "failed")
    await stack.client.bind("C-dead", "oUser_dead")
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 47003}]})  # invalid data: dead letter
    dead = make_event(customer_id="C-dead")
    assert (await stack.client.post_event(dead))[0] == 202
    await until_status(stack, dead["event_id"], "dead_lettered")

    expected = {
        unbound["event_id"]: ("event.no_binding", "no_binding"),
        unsubscribed["event_id"]: ("event.failed", "43004"),
        dead["event_id"]: ("event.dead_lettered", "47003"),
    }
    for event in (unbound, unsubscribed, dead):
        await _notified(stack, receiver, event)
        notice = _only(receiver, event)
        kind, reason = expected[event["event_id"]]
        assert notice.body["type"] == kind and notice.body["data"]["reason"] == reason
        assert notice.body["data"]["customer_id"] == event["customer_id"]
    assert receiver.rejected == [] and receiver.doubled() == 0
    sent = orjson.dumps([item.body for item in receiver.received]).decode()
    assert "6222020200001234" not in sent and "oUser_" not in sent and "1234.56" not in sent


async def test_fallback_sms_notifies_on_delivered_none_and_suppressed_never(
    stack_for: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    stack = await _stack(stack_for, receiver)
    await stack.client.bind("C-sms", "oUser_sms")
    status, _ = await stack.client.call(
        "PUT", "/v1/customers/C-muted/preferences", {"muted_types": ["card_purchase"]}
    )
    assert status == 200
    always = make_event(customer_id="C-sms", fallback="sms")
    delivered = make_event(customer_id="C-sms")
    never = make_event(customer_id="C-nobody", fallback="none")
    muted = make_event(customer_id="C-muted", fallback="sms")
    sentinel = make_event(customer_id="C-nobody-2")
    for event in (always, delivered, never, muted, sentinel):
        assert (await stack.client.post_event(event))[0] == 202

    await _notified(stack, receiver, always)
    await _notified(stack, receiver, sentinel)
    await until_status(stack, delivered["event_id"], "delivered")
    await until_status(stack, never["event_id"], "no_binding")
    assert await stack.status_of(muted["event_id"]) == "suppressed"

    assert _only(receiver, always).body["type"] == "event.delivered"
    assert _only(receiver, sentinel).body["type"] == "event.no_binding"
    for event in (delivered, never, muted):
        # the notice is queued in the same script that writes the final status: none now means none ever
        assert "notice" not in await _record(stack.redis, event)
        assert receiver.of_event(event["event_id"]) == []


async def test_a_receiver_down_for_a_minute_loses_and_doubles_nothing(
    stack_for: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    stack = await _stack(stack_for, receiver, retry_base_s=1.0 / COMPRESSION, retry_cap_s=300.0 / COMPRESSION)
    await receiver.stop()
    events = [make_event(customer_id=f"C-out-{number}") for number in range(OUTAGE_EVENTS)]
    for event in events:  # spread over the outage, as alerts keep failing while the receiver is down
        assert (await stack.client.post_event(event))[0] == 202
        await asyncio.sleep(OUTAGE_S / OUTAGE_EVENTS)
    await receiver.start()
    recovered = time.monotonic()

    async def all_arrived() -> bool:
        return all(receiver.of_event(event["event_id"]) for event in events)

    await eventually(all_arrived, timeout_s=60)
    caught_up_s = time.monotonic() - recovered
    records = [await _record(stack.redis, event) for event in events]

    assert all(len(receiver.of_event(event["event_id"])) == 1 for event in events)
    assert len(receiver.unique()) == OUTAGE_EVENTS and receiver.rejected == []
    assert await stack.redis.xlen(keys.notice_dead_letters(0)) == 0
    assert sum(int(record.get("notice_attempts", 0)) > 1 for record in records) > 0  # they were retried
    log.info(
        "receiver down %.0f s (equivalent): %d/%d notices reached it, %d raw deliveries, %d doubled, "
        "caught up %.1f s (equivalent) after recovery, at most %d attempts",
        OUTAGE_S * COMPRESSION,
        len(receiver.unique()),
        OUTAGE_EVENTS,
        receiver.raw,
        receiver.doubled(),
        caught_up_s * COMPRESSION,
        max(int(record.get("notice_attempts", 0)) for record in records),
    )

    async def all_sent() -> bool:
        return all([(await _record(stack.redis, event)).get("notice") == "sent" for event in events])

    await eventually(all_sent)


async def test_a_refusing_receiver_dead_letters_and_a_replay_delivers_once(
    stack_for: Callable[..., Any], receiver: WebhookReceiver
) -> None:
    stack = await _stack(stack_for, receiver)
    receiver.answer_status = 410
    event = make_event(customer_id="C-nobody")
    assert (await stack.client.post_event(event))[0] == 202

    async def failed() -> bool:
        return (await _record(stack.redis, event)).get("notice") == "failed"

    await eventually(failed)
    status, out = await pushgw(stack.settings.redis_url, "dlq", "list", "--notices")
    assert status == 0
    [row] = [orjson.loads(line) for line in out.splitlines()]
    assert (row["event_id"], row["notice_type"], row["reason"]) == (
        event["event_id"],
        "event.no_binding",
        "http_410",
    )
    assert receiver.url not in out and SECRET not in out
    assert (await pushgw(stack.settings.redis_url, "dlq", "list"))[1] == ""  # not a delivery dead letter

    receiver.answer_status = None
    status, out = await pushgw(
        stack.settings.redis_url, "dlq", "replay", "--notices", "--event-id", event["event_id"]
    )
    assert (status, orjson.loads(out)) == (0, {"replayed": 1})

    await _notified(stack, receiver, event)
    assert len(receiver.received) == 1 and receiver.refused_verified == 1
    assert _only(receiver, event).webhook_id == receiver.received[0].webhook_id
    record = await _record(stack.redis, event)
    assert (record["status"], record["notice"]) == ("no_binding", "sent")  # the event's status is untouched
    assert await stack.redis.xlen(keys.notice_dead_letters(0)) == 0
