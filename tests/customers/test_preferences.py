"""Preferences end to end: muted types and minimum amounts answer `suppressed` and send nothing; quiet hours
hold events for one digest; critical events ignore all of it; the API refuses bad documents."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client import REGISTRY

from gateway.core import keys
from gateway.core.critical import parse_critical_rules
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.gateway.helpers import assert_error, send
from tests.support import make_event, sent_as
from tests.workers.flows import StackFactory, until_status

CUSTOMER, OPENID = "C-prefs", "oUser_prefs1"


async def _prefer(stack: Stack, doc: dict[str, Any], customer: str = CUSTOMER) -> None:
    status, body = await stack.client.call("PUT", f"/v1/customers/{customer}/preferences", doc)
    assert status == 200, body


def _suppressed_count() -> float:
    return REGISTRY.get_sample_value("pushgw_events_total", {"result": "suppressed"}) or 0.0


def _quiet_now(tz: str = "Asia/Shanghai") -> dict[str, str]:
    """Quiet hours that hold now: from two minutes ago to two hours from now, local to `tz`."""
    now = datetime.now(ZoneInfo(tz))
    return {
        "start": (now - timedelta(minutes=2)).strftime("%H:%M"),
        "end": (now + timedelta(hours=2)).strftime("%H:%M"),
        "tz": tz,
    }


async def test_muted_types_and_small_amounts_are_suppressed_never_sent(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await _prefer(stack, {"muted_types": ["refund"], "min_amount": {"debit": "100.00"}})
    muted = make_event(customer_id=CUSTOMER, type="refund", amount="5.00")
    small = make_event(customer_id=CUSTOMER, type="debit", amount="99.99")
    enough = make_event(customer_id=CUSTOMER, type="debit", amount="100.00")
    other = make_event(customer_id=CUSTOMER, type="card_purchase", amount="5.00")

    counted_before = _suppressed_count()
    answers = [await stack.client.post_event(event) for event in (muted, small, enough, other)]
    assert _suppressed_count() - counted_before == 2
    assert [body["status"] for _, body in answers] == ["suppressed", "suppressed", "queued", "queued"]
    assert {status for status, _ in answers} == {202}
    for event in (enough, other):
        await until_status(stack, event["event_id"], "delivered")
    for event, reason in ((muted, "muted_type"), (small, "below_min_amount")):
        view = await until_status(stack, event["event_id"], "suppressed")
        assert view["last_error"] == reason
    sent = {message["client_msg_id"] for message in await stack.delivered_to(OPENID)}
    assert sent == {sent_as(enough), sent_as(other)}
    # the same event again (keys reordered: a new signature) is a duplicate
    again = dict(reversed(muted.items()))
    assert await stack.client.post_event(again) == (
        200,
        {"event_id": muted["event_id"], "status": "duplicate"},
    )


async def test_quiet_hours_hold_events_until_they_end_then_one_digest(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await _prefer(stack, {"quiet_hours": _quiet_now("Europe/Berlin")})
    held = [make_event(customer_id=CUSTOMER, type="debit", amount=f"{n}.00") for n in (10, 20)]
    for event in held:
        assert (await stack.client.post_event(event))[1]["status"] == "digested"
    critical = make_event(customer_id=CUSTOMER, type="debit", amount="9.00", priority="critical")
    assert (await stack.client.post_event(critical))[1]["status"] == "queued"
    await until_status(stack, critical["event_id"], "delivered")  # critical alerts ignore quiet hours
    assert [m["client_msg_id"] for m in await stack.delivered_to(OPENID)] == [sent_as(critical)]
    assert {(await stack.status_of(e["event_id"])) for e in held} == {"digested"}

    await _prefer(stack, {})  # the quiet hours end (here: the customer lifts them)
    for event in held:
        await until_status(stack, event["event_id"], "delivered")
    messages = await stack.delivered_to(OPENID)
    assert len(messages) == 2  # the critical one, then one digest of both held events
    assert "2笔" in str(messages[1]["data"])


async def test_critical_events_skip_the_rate_limit_and_digests(stack_for: StackFactory) -> None:
    rules = parse_critical_rules("debit>=50000,channel=CNP")
    stack = await stack_for(rate_limit=RateLimit(1, 60), critical_rules=rules)
    await stack.client.bind(CUSTOMER, OPENID)
    first = make_event(customer_id=CUSTOMER, type="debit", amount="10.00")
    over = make_event(customer_id=CUSTOMER, type="debit", amount="11.00")
    large = make_event(customer_id=CUSTOMER, type="debit", amount="50000.00")
    online = make_event(customer_id=CUSTOMER, type="card_purchase", amount="1.00", channel="CNP")
    flagged = make_event(customer_id=CUSTOMER, type="credit", amount="1.00", priority="critical")
    answers = [(await stack.client.post_event(e))[1]["status"] for e in (first, over, large, online, flagged)]
    assert answers == ["queued", "digested", "queued", "queued", "queued"]
    for event in (first, large, online, flagged):
        await until_status(stack, event["event_id"], "delivered")
    assert await stack.status_of(over["event_id"]) == "digested"  # still waiting for the window
    # entries-added, not XLEN: the worker may already have trimmed what it delivered
    assert (await stack.redis.xinfo_stream(keys.stream(0, critical=True)))["entries-added"] == 3


async def test_preferences_api_round_trip_and_errors(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    path = f"/v1/customers/{CUSTOMER}/preferences"
    empty: dict[str, Any] = {
        "customer_id": CUSTOMER,
        "muted_types": [],
        "min_amount": {},
        "quiet_hours": None,
    }
    assert await stack.client.call("GET", path) == (200, empty)
    quiet = {"start": "22:00", "end": "07:00"}
    doc: dict[str, Any] = {"muted_types": ["refund"], "quiet_hours": quiet}
    saved = {**empty, **doc, "quiet_hours": {**quiet, "tz": "Asia/Shanghai"}}
    assert await stack.client.call("PUT", path, doc) == (200, saved)
    assert await stack.client.call("GET", path) == (200, saved)

    bad = await send(
        stack.session, stack.client.url, "PUT", path, {"quiet_hours": {"start": "7", "end": "08:00"}}
    )
    assert_error(bad, 422, field="quiet_hours.start")
    unsigned = await send(stack.session, stack.client.url, "GET", path, headers={})
    assert_error(unsigned, 401)
    assert await stack.client.call("GET", path) == (200, saved)  # a refused PUT changed nothing
