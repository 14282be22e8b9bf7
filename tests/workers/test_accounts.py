"""Several WeChat official accounts in one deployment (issue 8), through the real gateway, worker, Redis and
simulator: each binding's appid picks the account, each account has its own token, circuit, quota and
template ids, and a binding naming an account the deployment does not send through is never sent."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from gateway.core import keys
from tests.conftest import Stack
from tests.support import APP_SECRET, APPID, eventually, make_event, sent_as
from tests.workers.flows import StackFactory, lifecycle, record_statuses
from wechatsim.app import SimConfig
from wechatsim.catalog import load_templates
from workers.render import Templates

CARD_APPID = "wx_card_centre"  # the credit-card centre beside the retail bank (APPID, the default account)
CARD_SECRET = "card_centre_secret"  # noqa: S105 - a fixture app secret
SHIPPED = Templates.load()
_numbers = itertools.count()


def _card_id(template_id: str) -> str:
    """The card centre's id of a shipped template: the same template, registered under another account."""
    return "Cc9" + template_id[3:]


CARD_IDS = {**{kind: _card_id(tid) for kind, tid in SHIPPED.event_templates.items()}}
CARD_IDS["digest"] = _card_id(SHIPPED.digest_template)


def _sim_config() -> SimConfig:
    card_templates = tuple(
        dataclasses.replace(t, template_id=_card_id(t.template_id)) for t in load_templates().values()
    )
    return SimConfig(
        apps={APPID: APP_SECRET, CARD_APPID: CARD_SECRET}, templates={CARD_APPID: card_templates}
    )


async def _two_accounts(stack_for: StackFactory, **overrides: Any) -> Stack:
    return await stack_for(
        sim_config=_sim_config(),
        wechat_accounts={CARD_APPID: CARD_SECRET},
        wechat_templates={CARD_APPID: CARD_IDS},
        **overrides,
    )


async def _customers(stack: Stack, count: int, appid: str | None) -> list[tuple[str, str]]:
    """`count` bound customers (customer id, openid) following `appid` (None: named by no appid)."""
    bound = []
    for _ in range(count):
        number = next(_numbers)
        customer_id, openid = f"C-acct-{number}", f"oUser_acct_{number}"
        body = {"openid": openid} if appid is None else {"openid": openid, "appid": appid}
        status, answer = await stack.client.call("PUT", f"/v1/bindings/{customer_id}", body)
        assert status == 200, answer
        bound.append((customer_id, openid))
    return bound


async def _post(
    stack: Stack, customers: list[tuple[str, str]], types: tuple[str, ...]
) -> list[dict[str, Any]]:
    events = [
        make_event(customer_id=customer_id, type=kind) for customer_id, _ in customers for kind in types
    ]
    for event in events:
        status, body = await stack.client.post_event(event)
        assert status == 202, body
    return events


async def _until(stack: Stack, events: list[dict[str, Any]], expected: set[str]) -> None:
    async def reached() -> bool:
        return set((await record_statuses(stack.redis, events)).values()) <= expected

    await eventually(reached, timeout_s=20)


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_each_message_reaches_its_account_with_that_accounts_templates_and_token(
    stack_for: StackFactory,
) -> None:
    refreshed_before = _metric("pushgw_token_refreshes_total", {"appid": CARD_APPID, "result": "ok"})
    stack = await _two_accounts(stack_for)
    retail = [*await _customers(stack, 2, None), *await _customers(stack, 1, APPID)]
    card = await _customers(stack, 3, CARD_APPID)
    delivered_before = _metric(
        "pushgw_account_deliveries_total", {"appid": CARD_APPID, "outcome": "delivered"}
    )
    types = ("card_purchase", "credit", "debit")
    events = await _post(stack, [*retail, *card], types)
    await _until(stack, events, {"delivered"})

    for customers, appid, ids in (
        (retail, APPID, SHIPPED.template_ids()),
        (card, CARD_APPID, set(CARD_IDS.values())),
    ):
        for _, openid in customers:
            messages = await stack.delivered_to(openid)
            assert len(messages) == len(types)
            assert {m["template_id"] for m in messages} <= ids
            via = (await stack.sim("GET", f"/sim/messages?touser={openid}&appid={appid}"))["messages"]
            assert via == messages
    stats = await stack.sim("GET", "/sim/stats")
    assert {appid: app["delivered"] for appid, app in stats["apps"].items()} == {APPID: 9, CARD_APPID: 9}
    assert stats["errcodes"] == {"0": 18}
    assert _metric("pushgw_account_deliveries_total", {"appid": CARD_APPID, "outcome": "delivered"}) == (
        delivered_before + 9
    )

    # one token per account, cached in Redis and reused by a second round
    tokens = {appid: await stack.redis.hget(keys.token(appid), "token") for appid in (APPID, CARD_APPID)}
    assert None not in tokens.values() and tokens[APPID] != tokens[CARD_APPID]
    assert stats["calls"]["stable_token"] == 2
    await _until(stack, await _post(stack, [retail[0], card[0]], ("refund",)), {"delivered"})
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["stable_token"] == 2
    assert (
        _metric("pushgw_token_refreshes_total", {"appid": CARD_APPID, "result": "ok"}) == refreshed_before + 1
    )


async def test_one_accounts_outage_does_not_stop_the_others_deliveries(stack_for: StackFactory) -> None:
    stack = await _two_accounts(stack_for, breaker_failures=2, breaker_open_s=0.3, max_attempts=50)
    [retail] = await _customers(stack, 1, None)
    card = await _customers(stack, 2, CARD_APPID)
    await stack.sim("PUT", f"/sim/faults?appid={CARD_APPID}", {"outage": True})
    deferred_before = _metric("pushgw_retries_total", {"reason": "circuit_open"})
    held = await _post(stack, card, ("debit", "credit"))

    async def card_circuit_open() -> bool:  # a delivery was deferred: only the card centre's can be
        return _metric("pushgw_retries_total", {"reason": "circuit_open"}) > deferred_before

    await eventually(card_circuit_open, timeout_s=15)
    assert _metric("pushgw_circuit_open", {"appid": CARD_APPID}) == 1
    flowing = await _post(stack, [retail], ("debit", "credit", "refund"))
    await _until(stack, flowing, {"delivered"})
    assert set((await record_statuses(stack.redis, held)).values()) <= {"queued", "retrying"}
    assert _metric("pushgw_circuit_open", {"appid": APPID}) == 0
    assert (await stack.sim("GET", "/sim/stats"))["apps"].get(CARD_APPID, {}).get("delivered", 0) == 0

    await stack.sim("PUT", f"/sim/faults?appid={CARD_APPID}", {})  # the card centre's WeChat is back
    await _until(stack, held, {"delivered"})
    assert _metric("pushgw_circuit_open", {"appid": CARD_APPID}) == 0
    for customer_id, openid in card:  # one message per event, however many probes failed
        sent = [message["client_msg_id"] for message in await stack.delivered_to(openid)]
        assert sorted(sent) == sorted(sent_as(e) for e in held if e["customer_id"] == customer_id)


@pytest.mark.parametrize(
    ("quota", "errcode", "paused"), [("daily_quota", "45009", True), ("minute_quota", "45011", False)]
)
async def test_one_account_over_quota_waits_while_the_other_keeps_delivering(
    stack_for: StackFactory, quota: str, errcode: str, paused: bool
) -> None:
    """45009 pauses only the card centre's circuit until Shanghai midnight, 45011 until the next minute.
    Either way the retail bank's messages go out, and nothing fails."""
    stack = await _two_accounts(stack_for, max_age_s=2 * 86400)
    [retail] = await _customers(stack, 1, None)
    [card] = await _customers(stack, 1, CARD_APPID)
    await stack.sim("PUT", f"/sim/faults?appid={CARD_APPID}", {quota: 1})
    held = await _post(stack, [card], ("debit", "credit", "refund"))

    async def card_held_back() -> bool:  # each event sent or waiting (none failed), one refused by the quota
        views = [await lifecycle(stack, event["event_id"]) for event in held]
        if not {v["status"] for v in views} <= {"delivered", "retrying"}:
            return False
        return any((v["status"], v["last_error"]) == ("retrying", errcode) for v in views)

    await eventually(card_held_back, timeout_s=15)
    assert _metric("pushgw_circuit_open", {"appid": CARD_APPID}) == (
        1 if paused else 0
    )  # a minute's: no page

    flowing = await _post(stack, [retail], ("debit", "credit", "refund", "card_purchase"))
    await _until(stack, flowing, {"delivered"})
    assert _metric("pushgw_circuit_open", {"appid": APPID}) == 0
    apps = (await stack.sim("GET", "/sim/stats"))["apps"]
    assert apps[APPID]["delivered"] == 4
    # a 45011 wait ends with the minute, so the card centre may have sent again meanwhile
    assert apps[CARD_APPID]["delivered"] == 1 if paused else apps[CARD_APPID]["delivered"] >= 1


async def test_an_account_the_deployment_does_not_send_through_is_refused_and_never_sent(
    stack_for: StackFactory,
) -> None:
    stack = await _two_accounts(stack_for)
    status, body = await stack.client.call(
        "PUT", "/v1/bindings/C-acct-x", {"openid": "oUser_x1", "appid": "wx_other"}
    )
    assert (status, body["error"]["code"], body["error"]["field"]) == (422, "unknown_appid", "appid")
    assert not await stack.redis.exists(keys.binding("C-acct-x"))

    # a binding made before its account was taken out of the configuration
    retired = {"openid": "oUser_retired", "appid": "wx_retired", "status": "active", "updated_ms": "0"}
    await stack.redis.hset(keys.binding("C-acct-retired"), mapping=cast(Any, retired))
    dead_before = _metric("pushgw_dead_letters_total", {"reason": "unknown_appid"})
    [event] = await _post(stack, [("C-acct-retired", "oUser_retired")], ("debit",))
    await _until(stack, [event], {"dead_lettered"})

    view = await lifecycle(stack, event["event_id"])
    assert (view["last_error"], view["attempts"]) == ("unknown_appid: wx_retired", 0)
    assert _metric("pushgw_dead_letters_total", {"reason": "unknown_appid"}) == dead_before + 1
    assert await stack.delivered_to("oUser_retired") == []
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["send"] == 0
