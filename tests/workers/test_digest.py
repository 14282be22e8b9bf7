"""Over the per-customer rate limit, events are folded into one digest sent when the window reopens."""

from __future__ import annotations

from gateway.core.settings import RateLimit
from tests.support import make_event, sent_as
from tests.workers.flows import StackFactory, backlog, until_status

CUSTOMER = "C-digest"
OPENID = "oUser_digest"
DIGEST_TEMPLATE = "Tq1Kx0DigestNotice0000000000000000000000006"


async def test_events_over_the_limit_become_one_digest(stack_for: StackFactory) -> None:
    stack = await stack_for(rate_limit=RateLimit(2, 2))
    await stack.client.bind(CUSTOMER, OPENID)
    events = [
        make_event(customer_id=CUSTOMER, type="debit", amount="10.00"),
        make_event(customer_id=CUSTOMER, type="credit", amount="20.00"),
        make_event(
            customer_id=CUSTOMER, type="debit", amount="100.10", occurred_at="2026-11-22T10:02:00+08:00"
        ),
        make_event(
            customer_id=CUSTOMER,
            type="card_purchase",
            amount="1200.20",
            occurred_at="2026-11-22T10:03:00+08:00",
        ),
        make_event(
            customer_id=CUSTOMER, type="refund", amount="50.00", occurred_at="2026-11-22T10:04:00+08:00"
        ),
    ]
    answers = [await stack.client.post_event(event) for event in events]
    assert [(status, body["status"]) for status, body in answers] == [(202, "queued")] * 2 + [
        (202, "digested")
    ] * 3

    views = [await until_status(stack, event["event_id"], "delivered") for event in events]
    messages = await stack.delivered_to(OPENID)
    # the two queued events go out concurrently, in either order
    assert {m["client_msg_id"] for m in messages[:2]} == {sent_as(events[0]), sent_as(events[1])}
    [digest] = messages[2:]
    assert digest["template_id"] == DIGEST_TEMPLATE
    assert digest["client_msg_id"].startswith("dg-")
    assert digest["data"] == {
        "thing1": {"value": "尾号1234"},
        "time2": {"value": "2026年11月22日 10:02"},
        "thing3": {"value": "3笔动账"},
        "amount4": {"value": "1,300.30元"},
        "amount5": {"value": "50.00元"},
    }
    # the held events are delivered by the digest: they carry its msgid
    assert {view["msgid"] for view in views[2:]} == {str(digest["msgid"])}
    stats = await stack.sim("GET", "/sim/stats")
    assert (stats["delivered"], stats["calls"]["send"]) == (3, 3)
    assert await backlog(stack.redis) == 0


async def test_a_digest_is_retried_like_an_event(stack_for: StackFactory) -> None:
    stack = await stack_for(rate_limit=RateLimit(1, 1))
    await stack.client.bind(CUSTOMER, OPENID)
    # the queued event is answered normally, the digest's first send is busy
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 0}, {"errcode": -1}]})
    events = [
        make_event(customer_id=CUSTOMER, type="debit", amount="1.00", counterparty="上海/浦东 7-11"),
        make_event(customer_id=CUSTOMER, type="transfer_in", amount="2.50", counterparty="张三/工资"),
        make_event(customer_id=CUSTOMER, type="atm_withdrawal", amount="300", counterparty="ATM \\ 南京路"),
    ]
    statuses = [(await stack.client.post_event(event))[1]["status"] for event in events]
    assert statuses == ["queued", "digested", "digested"]

    views = [await until_status(stack, event["event_id"], "delivered") for event in events[1:]]
    assert {view["attempts"] for view in views} == {2}
    [_, digest] = await stack.delivered_to(OPENID)
    assert digest["data"]["thing3"] == {"value": "2笔动账"}
    assert digest["data"]["amount4"] == {"value": "300.00元"}
    assert digest["data"]["amount5"] == {"value": "2.50元"}
    assert (await stack.sim("GET", "/sim/stats"))["errcodes"] == {"0": 2, "-1": 1}
    assert await backlog(stack.redis) == 0
