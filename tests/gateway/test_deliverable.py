"""One source of truth for what is deliverable (issue 16, part 4): whatever the ingress validator accepts
(a 202) renders within WeChat's value rules, and what render could not show is refused at ingress with a 422
naming the field, never dead-lettered later.

Pure tests of `parse_event` and the renderer: no Redis, no signatures. The simulator's rules
(`wechatsim.rules`, which imports nothing of ours) are the independent judge of what WeChat accepts.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from gateway.core.display import AMOUNT_DIGITS, CURRENCY_SYMBOLS, format_amount
from gateway.core.errors import Unprocessable
from gateway.core.event import CURRENCIES, Event, EventType, parse_event
from gateway.core.masking import is_hidden
from tests.support import KEY_ID, make_event
from wechatsim.catalog import load_templates
from wechatsim.rules import check_data
from workers.render import OUTFLOWS, Templates, render_digest, render_event

TEMPLATES = Templates.load()
SIM_TEMPLATES = load_templates()
OPENID = "oUser_deliverable"
FIELDS = {
    "event_id",
    "customer_id",
    "account",
    "type",
    "amount",
    "currency",
    "occurred_at",
    "balance",
    "counterparty",
    "channel",
    "priority",
    "fallback",
}


def _refusal(event: dict[str, Any]) -> Unprocessable:
    with pytest.raises(Unprocessable) as caught:
        parse_event(event)
    return caught.value


def _assert_wechat_accepts(message: dict[str, Any]) -> None:
    """What the simulator, standing in for WeChat, would answer 47003 to; and nothing invisible is shown."""
    assert check_data(SIM_TEMPLATES[message["template_id"]].keys, message["data"]) is None, message["data"]
    for entry in message["data"].values():
        assert entry["value"], message["data"]
        assert not any(map(is_hidden, entry["value"])), entry["value"]


# -- the finding: a 202 for what render refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("999999999999999.99", "CNY"),  # the reported one: 202, then dead-lettered at render
        ("10000000000", "CNY"),
        ("10000000000.00", "USD"),
        ("12345678901", "JPY"),
        ("99999999999.99", "EUR"),
    ],
)
def test_an_amount_wechat_cannot_show_is_refused_naming_the_amount(amount: str, currency: str) -> None:
    refusal = _refusal(make_event(amount=amount, currency=currency))
    assert (refusal.status, refusal.code, refusal.field) == (422, "invalid_field", "amount")
    assert str(AMOUNT_DIGITS) in refusal.message
    assert amount not in refusal.message  # error answers never echo request bytes


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("9999999999.99", "CNY", "9,999,999,999元"),  # whole units past 8 digits: cut, never rounded up
        ("9999999999.99", "JPY", "¥9,999,999,999"),
        ("9999999999", "USD", "$9,999,999,999"),
        ("0.01", "GBP", "£0.01"),
    ],
)
def test_the_largest_amounts_that_show_are_accepted_and_render(
    amount: str, currency: str, shown: str
) -> None:
    event = parse_event(make_event(amount=amount, currency=currency))
    message = render_event(TEMPLATES, event, OPENID, KEY_ID)
    assert message["data"]["amount4"]["value"] == shown
    _assert_wechat_accepts(message)


@pytest.mark.parametrize(
    "counterparty", ["\u200b", "\u202e\u2066\u2069", "\u3164\u3164", " \u200b \ufeff ", "\u2028"]
)
def test_a_counterparty_with_nothing_visible_is_refused(counterparty: str) -> None:
    """Sent as is it would be an empty value (WeChat: 47003 "data.thing6.value is empty")."""
    refusal = _refusal(make_event(counterparty=counterparty))
    assert (refusal.status, refusal.field) == (422, "counterparty")


def test_a_balance_wechat_cannot_show_is_left_out_and_the_alert_goes() -> None:
    """A corporate balance of 10 billion or more: the alert about the money that moved still goes."""
    event = parse_event(make_event(balance="999999999999999.99"))
    message = render_event(TEMPLATES, event, OPENID, KEY_ID)
    assert "amount5" not in message["data"]
    _assert_wechat_accepts(message)


def test_the_currencies_accepted_are_exactly_those_render_shows() -> None:
    assert set(CURRENCY_SYMBOLS) == CURRENCIES
    for currency in CURRENCIES:
        assert format_amount("1", currency)


# -- the property: accepted means renderable -----------------------------------------------------------------

_DIGIT_SCRIPTS = "0123456789０１２３٣۴५"
_ODD = " .,/_-\u3000\u200b\u2060\u202e\u2066\u2028\u2029\u0085\u00ad\ufeff\u3164"
_amounts = st.one_of(
    st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999999999.99"), places=2).map(str),
    st.integers(1, 10**AMOUNT_DIGITS - 1).map(str),
    st.from_regex(r"(0|[1-9][0-9]{0,16})(\.[0-9]{1,3})?", fullmatch=True),  # past what shows, too
)
_balances = st.one_of(_amounts, _amounts.map(lambda amount: f"-{amount}"), st.just("-0"), st.none())
_offsets = st.integers(-(24 * 60 - 1), 24 * 60 - 1).map(lambda minutes: timezone(timedelta(minutes=minutes)))


def _instants(low: datetime, high: datetime) -> st.SearchStrategy[str]:
    return st.datetimes(min_value=low, max_value=high, timezones=_offsets).map(datetime.isoformat)


_moments = st.one_of(
    _instants(datetime(1970, 1, 2), datetime(9998, 12, 30)),
    _instants(datetime(1969, 12, 30), datetime(1970, 1, 2)),  # the ends of the accepted range
    _instants(datetime(9998, 12, 30), datetime(9999, 12, 31)),
    _instants(datetime(1, 1, 2), datetime(9999, 12, 30)),
)
_free_text = st.one_of(
    st.text(max_size=64),
    st.text(st.sampled_from("aZ店上海银行 " + _DIGIT_SCRIPTS + _ODD), min_size=1, max_size=64),
    st.none(),
)
events = st.fixed_dictionaries(
    {
        "event_id": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,20}", fullmatch=True),
        "customer_id": st.just("C100234"),
        "account": st.from_regex(r"[0-9]{8,32}", fullmatch=True),
        "type": st.sampled_from(sorted(EventType)),
        "amount": _amounts,
        "currency": st.sampled_from(sorted(CURRENCIES)),
        "occurred_at": _moments,
    },
    optional={
        "balance": _balances,
        "counterparty": _free_text,
        "channel": _free_text,
        "priority": st.sampled_from(["normal", "critical"]),
        "fallback": st.sampled_from(["sms", "none"]),
    },
)


def _parsed(raw: dict[str, Any]) -> Event | None:
    """The event the gateway answers 202 for, or None: a refusal is a 422 naming one of the event's fields."""
    try:
        return parse_event(raw)
    except Unprocessable as refusal:
        assert (refusal.status, refusal.code) == (422, "invalid_field")
        assert refusal.field in FIELDS
        return None


@settings(max_examples=400, deadline=None, database=None)
@given(raw=events)
@example(raw=make_event(amount="999999999999999.99"))
@example(raw=make_event(amount="9999999999.99", balance="999999999999999.99", currency="JPY"))
@example(raw=make_event(counterparty="\u200b\u2060", channel="x"))
@example(raw=make_event(occurred_at="9998-12-31T23:59:59-23:59"))
@example(raw=make_event(occurred_at="1970-01-01T00:00:00+23:59"))
@example(raw=make_event(currency="XXX", priority="urgent"))
def test_every_accepted_event_renders_within_wechats_rules(raw: dict[str, Any]) -> None:
    event = _parsed(raw)
    if event is None:
        reject()
    _assert_wechat_accepts(render_event(TEMPLATES, event, OPENID, KEY_ID))


@settings(max_examples=150, deadline=None, database=None)
@given(raws=st.lists(events, min_size=1, max_size=4))
@example(
    raws=[make_event(amount="9999999999.99", type="debit"), make_event(amount="9999999999.99", type="debit")]
)
def test_every_digest_of_accepted_events_renders_within_wechats_rules(raws: list[dict[str, Any]]) -> None:
    held = [event for raw in raws if (event := _parsed(raw)) is not None]
    if not held:
        reject()
    message = render_digest(TEMPLATES, "dg-deliverable", held, OPENID)
    _assert_wechat_accepts(message)
    debit = sum(Decimal(e.amount) for e in held if e.currency == "CNY" and e.type in OUTFLOWS)
    if (
        debit >= 10**AMOUNT_DIGITS
    ):  # each event fits, their sum may not: the total is left out, the digest goes
        assert "amount4" not in message["data"]
