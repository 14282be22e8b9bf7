"""GET /v1/customers/{customer_id}/events: every alert of a customer with its status timeline, masked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.core.settings import RateLimit
from gateway.handlers.customers import timeline_steps
from tests.gateway.helpers import assert_error, send
from tests.support import KEY_ID, SECRET, eventually, make_event
from tests.webhook_receiver import WebhookReceiver
from tests.workers.flows import StackFactory, until_status

CUSTOMER, OPENID = "C-timeline", "oUser_timeline"


def _states(view: dict[str, Any]) -> list[str]:
    return [step["state"] for step in view["timeline"]]


async def test_the_timeline_shows_every_state_of_every_alert(stack_for: StackFactory) -> None:
    receiver = await WebhookReceiver([SECRET]).start()
    try:
        await _every_state(stack_for, receiver)
    finally:
        await receiver.stop()


async def _every_state(stack_for: StackFactory, receiver: WebhookReceiver) -> None:
    stack = await stack_for(rate_limit=RateLimit(1, 60), callback_urls={KEY_ID: receiver.url})
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.client.call("PUT", f"/v1/customers/{CUSTOMER}/preferences", {"muted_types": ["refund"]})
    sent = make_event(customer_id=CUSTOMER, type="debit", amount="10.00")
    muted = make_event(customer_id=CUSTOMER, type="refund", amount="3.00")
    held = make_event(customer_id=CUSTOMER, type="debit", amount="11.00")
    urgent = make_event(customer_id=CUSTOMER, type="debit", amount="12.00", priority="critical")
    for event in (sent, muted, held, urgent):
        await stack.client.post_event(event)
    for event in (sent, urgent):
        await until_status(stack, event["event_id"], "delivered")
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 47003}]})  # invalid data: dead letter
    poisoned = make_event(customer_id=CUSTOMER, type="debit", amount="12.50", priority="critical")
    await stack.client.post_event(poisoned)
    await until_status(stack, poisoned["event_id"], "dead_lettered")
    await stack.sim("POST", "/sim/unsubscribe", {"openid": OPENID})
    refused = make_event(customer_id=CUSTOMER, type="debit", amount="13.00", priority="critical")
    await stack.client.post_event(refused)
    await until_status(stack, refused["event_id"], "failed")  # 43004: the binding is marked unsubscribed
    unbound = make_event(customer_id=CUSTOMER, type="debit", amount="14.00", priority="critical")
    await stack.client.post_event(unbound)
    await until_status(stack, unbound["event_id"], "no_binding")

    async def notified() -> bool:  # core banking heard about the three that did not reach the customer
        return len(receiver.unique()) == 3

    await eventually(notified)

    status, body = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events")
    assert status == 200
    views = {view["event_id"]: view for view in body["events"]}
    order = [unbound, refused, poisoned, urgent, held, muted, sent]
    assert [view["event_id"] for view in body["events"]] == [e["event_id"] for e in order]  # newest first
    assert _states(views[sent["event_id"]]) == ["accepted", "sent"]
    assert _states(views[muted["event_id"]]) == ["accepted", "suppressed"]
    assert views[muted["event_id"]]["timeline"][1]["detail"] == "muted_type"
    assert _states(views[held["event_id"]]) == ["accepted", "digested"]
    assert views[held["event_id"]]["timeline"][1]["detail"] == "rate_limit"
    assert views[urgent["event_id"]]["priority"] == "critical"
    assert _states(views[poisoned["event_id"]]) == ["accepted", "dead_lettered", "fallback_sent"]
    assert _states(views[refused["event_id"]]) == ["accepted", "failed", "fallback_sent"]
    assert views[refused["event_id"]]["last_error"] == "43004"
    assert _states(views[unbound["event_id"]]) == ["accepted", "no_binding", "fallback_sent"]
    first = views[sent["event_id"]]
    assert (first["type"], first["amount"], first["currency"], first["account"]) == (
        "debit",
        "10.00",
        "CNY",
        "****1234",
    )
    assert "6222020200001234" not in str(body)


async def test_since_and_limit_narrow_the_timeline(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(100, 60))
    events = [make_event(customer_id=CUSTOMER) for _ in range(3)]
    for event in events:
        await stack.client.post_event(event)
    path = f"/v1/customers/{CUSTOMER}/events"
    _, body = await stack.client.call("GET", f"{path}?limit=2")
    assert [view["event_id"] for view in body["events"]] == [events[2]["event_id"], events[1]["event_id"]]
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert (await stack.client.call("GET", f"{path}?since={later}"))[1]["events"] == []
    assert (await stack.client.call("GET", "/v1/customers/C-nobody/events"))[1]["events"] == []
    for query, field in (("limit=0", "limit"), ("limit=x", "limit"), ("since=yesterday", "since")):
        assert_error(await send(stack.session, stack.client.url, "GET", f"{path}?{query}"), 422, field=field)


def test_finish_status_and_the_fallback_notice_are_steps() -> None:
    record = {
        "status": "delivered",
        "accepted_ms": "1000",
        "delivered_ms": "2000",
        "msgid": "123",
        "finished_ms": "3000",
        "finish_status": "failed:user block",
        "notice": "sent",
        "notified_ms": "4000",
        "updated_ms": "2000",
    }
    assert [(step["state"], step.get("detail")) for step in timeline_steps(record)] == [
        ("accepted", None),
        ("sent", "123"),
        ("wechat_finished", "failed:user block"),
        ("fallback_sent", None),
    ]
