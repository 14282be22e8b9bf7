"""Rendering: masked account, amount formats, thing truncation, Shanghai time, digest totals, and the
template contract with the simulator (which imports nothing of ours)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.event import Event, EventType
from tests.support import KEY_ID
from wechatsim.catalog import load_templates
from wechatsim.rules import check_data
from workers.render import (
    CLIENT_MSG_ID_MAX,
    RenderError,
    Templates,
    client_msg_id,
    fit,
    format_amount,
    format_time,
    render_digest,
    render_event,
)

OPENID = "oUser_render"
TEMPLATES = Templates.load()
LABELS = {
    "debit": "支出",
    "credit": "入账",
    "card_purchase": "消费",
    "transfer_out": "转出",
    "transfer_in": "转入",
    "atm_withdrawal": "取现",
    "loan_repayment": "还款",
    "refund": "退款",
}


def _event(**overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": "EV-render",
        "customer_id": "C1",
        "account": "6222020200001234",
        "type": EventType.CARD_PURCHASE,
        "amount": "1234.56",
        "currency": "CNY",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "balance": "5678.90",
        "counterparty": "Starbucks Shanghai",
        **overrides,
    }
    return Event(**fields)


def _values(message: dict[str, Any]) -> dict[str, str]:
    return {key: entry["value"] for key, entry in message["data"].items()}


def test_event_renders_every_key() -> None:
    message = render_event(TEMPLATES, _event(), OPENID, KEY_ID)
    assert message["touser"] == OPENID
    assert message["client_msg_id"] == "cbs/EV-render"
    assert message["template_id"] == "Tq1Kx0CardPurchaseNotice000000000000000003"
    assert _values(message) == {
        "thing1": "尾号1234",
        "time2": "2026年11月22日 10:00",
        "phrase3": "消费",
        "amount4": "1,234.56元",
        "amount5": "5,678.90元",
        "thing6": "Starbucks Shanghai",
    }


def test_client_msg_id_is_one_per_source_and_event_and_the_same_on_every_attempt() -> None:
    assert client_msg_id("cbs", "CBS-1") == "cbs/CBS-1" == client_msg_id("cbs", "CBS-1")
    assert client_msg_id("cards", "CBS-1") == "cards/CBS-1"
    # a ':' may be in a key id and in an event id: the '/' keeps ("a:b", "c") and ("a", "b:c") apart
    assert client_msg_id("a:b", "c") != client_msg_id("a", "b:c")
    assert client_msg_id("k" * 31, "E" * 32) == "k" * 31 + "/" + "E" * 32  # 64 characters: as it is
    hashed = client_msg_id("k" * 32, "E" * 32)  # 65: hashed
    assert re.fullmatch(r"h-[0-9a-f]{62}", hashed) and hashed == client_msg_id("k" * 32, "E" * 32)
    assert hashed not in {client_msg_id("k" * 32, "E" * 31 + "F"), client_msg_id("k" * 31 + "j", "E" * 32)}
    with pytest.raises(ValueError, match="/"):
        client_msg_id("a/b", "c")


_KEY_ID = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)  # PUSHGW_API_KEYS' key ids
_EVENT_ID = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)  # the event_id field


@given(first=st.tuples(_KEY_ID, _EVENT_ID), second=st.tuples(_KEY_ID, _EVENT_ID))
def test_client_msg_ids_fit_wechat_and_two_events_never_share_one(
    first: tuple[str, str], second: tuple[str, str]
) -> None:
    sent = client_msg_id(*first)
    assert sent.isascii() and len(sent) <= CLIENT_MSG_ID_MAX == 64
    assert not sent.startswith("dg-")  # a digest's id
    assert (sent == client_msg_id(*second)) == (first == second)


@pytest.mark.parametrize("event_type", list(EventType))
def test_each_type_has_its_label_and_passes_the_simulators_rules(event_type: EventType) -> None:
    message = render_event(TEMPLATES, _event(type=event_type), OPENID, KEY_ID)
    assert _values(message)["phrase3"] == LABELS[event_type]
    sim_template = load_templates()[message["template_id"]]
    assert check_data(sim_template.keys, message["data"]) is None


def test_optional_values_are_left_out_not_sent_empty() -> None:
    message = render_event(TEMPLATES, _event(balance=None, counterparty=None), OPENID, KEY_ID)
    assert set(message["data"]) == {"thing1", "time2", "phrase3", "amount4"}


def test_an_overdrawn_balance_is_left_out() -> None:
    assert "amount5" not in render_event(TEMPLATES, _event(balance="-12.00"), OPENID, KEY_ID)["data"]


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        ("1234.56", "CNY", "1,234.56元"),
        ("1234.5", "CNY", "1,234.50元"),
        ("0.01", "CNY", "0.01元"),
        ("0", "CNY", "0.00元"),
        ("1000000", "CNY", "1,000,000.00元"),
        ("99999999.99", "CNY", "99,999,999.99元"),
        ("100000000.00", "CNY", "100,000,000元"),  # whole yuan past 8 digits: cut, never rounded up
        ("123456789.99", "CNY", "123,456,789元"),
        ("9999999999.99", "CNY", "9,999,999,999元"),
        ("12", "USD", "$12.00"),
        ("1234.5", "EUR", "€1,234.50"),
        ("7.25", "GBP", "£7.25"),
        ("1234", "JPY", "¥1,234"),
        ("1234567890", "JPY", "¥1,234,567,890"),
    ],
)
def test_amount_format(amount: str, currency: str, shown: str) -> None:
    assert format_amount(amount, currency) == shown


@pytest.mark.parametrize(
    ("amount", "currency"), [("10000000000.00", "CNY"), ("123456789012.34", "USD"), ("12345678901", "JPY")]
)
def test_amount_with_too_many_digits_is_a_render_error(amount: str, currency: str) -> None:
    with pytest.raises(RenderError):
        format_amount(amount, currency)
    with pytest.raises(RenderError):
        render_event(TEMPLATES, _event(amount=amount, currency=currency), OPENID, KEY_ID)


def test_thing_is_cut_to_twenty_characters() -> None:
    assert fit("thing6", "x" * 20) == "x" * 20
    cut = fit("thing6", "Starbucks Shanghai Nanjing East Road")
    assert len(cut) == 20
    assert cut == "Starbucks Shanghai " + "…"
    long_party = "上海某某科技有限公司上海某某科技有限公司上海"
    assert (
        len(_values(render_event(TEMPLATES, _event(counterparty=long_party), OPENID, KEY_ID))["thing6"]) == 20
    )


def test_phrase_that_cannot_fit_is_a_render_error() -> None:
    assert fit("phrase3", "消费") == "消费"
    with pytest.raises(RenderError):
        fit("phrase3", "消费消费消费")
    with pytest.raises(RenderError):
        fit("phrase3", "pay")


def test_unknown_category_is_a_render_error() -> None:
    with pytest.raises(RenderError):
        fit("character_string7", "x")


@pytest.mark.parametrize(
    ("occurred_at", "shown"),
    [
        ("2026-11-22T10:00:00+08:00", "2026年11月22日 10:00"),
        ("2026-11-22T02:00:00+00:00", "2026年11月22日 10:00"),
        ("2026-11-22T02:00:00Z", "2026年11月22日 10:00"),
        ("2026-11-21T21:30:59-05:00", "2026年11月22日 10:30"),
        ("2026-12-31T23:59:00+09:00", "2026年12月31日 22:59"),
        ("2026-12-31T16:05:00+00:00", "2027年01月01日 00:05"),
    ],
)
def test_time_is_shown_in_shanghai(occurred_at: str, shown: str) -> None:
    from datetime import datetime

    assert format_time(datetime.fromisoformat(occurred_at)) == shown
    assert _values(render_event(TEMPLATES, _event(occurred_at=occurred_at), OPENID, KEY_ID))["time2"] == shown


def test_digest_counts_totals_and_earliest_time() -> None:
    events = [
        _event(event_id="e1", type=EventType.DEBIT, amount="100.10", occurred_at="2026-11-22T10:05:00+08:00"),
        _event(
            event_id="e2", type=EventType.CARD_PURCHASE, amount="1200", occurred_at="2026-11-22T01:02:00Z"
        ),
        _event(event_id="e3", type=EventType.CREDIT, amount="50.5", occurred_at="2026-11-22T10:10:00+08:00"),
        _event(event_id="e4", type=EventType.REFUND, amount="0.5", occurred_at="2026-11-22T10:11:00+08:00"),
        _event(event_id="e5", type=EventType.ATM_WITHDRAWAL, amount="99", currency="USD"),
    ]
    message = render_digest(TEMPLATES, "dg-abc", events, OPENID)
    assert message["template_id"] == "Tq1Kx0DigestNotice0000000000000000000000006"
    assert message["client_msg_id"] == "dg-abc"
    assert _values(message) == {
        "thing1": "尾号1234",
        "time2": "2026年11月22日 09:02",
        "thing3": "5笔动账",
        "amount4": "1,300.10元",
        "amount5": "51.00元",
    }
    sim_template = load_templates()[message["template_id"]]
    assert check_data(sim_template.keys, message["data"]) is None


def test_digest_over_several_accounts_says_so_and_masks_each() -> None:
    events = [_event(event_id="e1"), _event(event_id="e2", account="6222020200005678")]
    message = render_digest(TEMPLATES, "dg-two", events, OPENID)
    assert _values(message)["thing1"] == "尾号1234等"
    assert "5678" not in json.dumps(message, ensure_ascii=False).replace("尾号1234等", "")


_DIGIT_RUN = re.compile(r"\d+")


def _assert_only_tail_shown(message: dict[str, Any], account: str) -> None:
    # everything but the template id (a constant that happens to hold digits)
    text = json.dumps({k: v for k, v in message.items() if k != "template_id"}, ensure_ascii=False)
    assert f"尾号{account[-4:]}" in text
    # no other value carries a run of digits long enough to hold more of the account
    longest = max((len(run) for run in _DIGIT_RUN.findall(text)), default=0)
    assert longest <= 4, text
    for start in range(len(account) - 4):
        assert account[start : start + 5] not in text


@given(
    account=st.text(alphabet="0123456789", min_size=8, max_size=32),
    event_type=st.sampled_from(list(EventType)),
    counterparty=st.text(alphabet="abcdefghijklmnopqrstuvwxyz 上海银行", min_size=1, max_size=40),
)
def test_no_more_than_the_last_four_digits_of_the_account_are_rendered(
    account: str, event_type: EventType, counterparty: str
) -> None:
    event = _event(event_id="EV-mask", account=account, type=event_type, counterparty=counterparty)
    _assert_only_tail_shown(render_event(TEMPLATES, event, "oUser_mask", KEY_ID), account)
    _assert_only_tail_shown(render_digest(TEMPLATES, "dg-mask", [event, event], "oUser_mask"), account)


def test_template_contract_with_the_simulator() -> None:
    """Every template id we send exists in the simulator's catalog with exactly the keys we fill."""
    sim = load_templates()
    for template_id in TEMPLATES.event_templates.values():
        assert template_id in sim
        assert set(sim[template_id].keys) == set(TEMPLATES.event_fields)
    assert TEMPLATES.digest_template in sim
    assert set(sim[TEMPLATES.digest_template].keys) == set(TEMPLATES.digest_fields)
    assert set(TEMPLATES.event_templates) == {t.value for t in EventType}
    assert TEMPLATES.labels == LABELS


def test_an_account_number_inside_the_counterparty_is_masked() -> None:
    message = render_event(TEMPLATES, _event(counterparty="转账 6222020200005678"), OPENID, KEY_ID)
    assert _values(message)["thing6"] == "转账 ****5678"
    assert (
        _values(render_event(TEMPLATES, _event(counterparty="Store 2046"), OPENID, KEY_ID))["thing6"]
        == "Store 2046"
    )


def test_an_amount_key_past_ten_digits_is_a_render_error() -> None:
    assert fit("amount4", "9,999,999,999元") == "9,999,999,999元"
    with pytest.raises(RenderError):
        fit("amount4", "10,000,000,000元")


@pytest.mark.parametrize("balance", ["10000000000.00", "999999999999999.99"])
def test_a_balance_wechat_cannot_show_is_left_out_not_a_render_error(balance: str) -> None:
    """Like an overdrawn one: the alert about the money that moved still goes (issue 16)."""
    message = render_event(TEMPLATES, _event(balance=balance), OPENID, KEY_ID)
    assert "amount5" not in message["data"]
    assert _values(message)["amount4"] == "1,234.56元"


def test_digest_totals_past_ten_digits_are_left_out_and_the_digest_goes() -> None:
    """Each held event fits WeChat's 10 digits (the gateway refuses one that does not); their sum may not."""
    events = [
        _event(event_id="e1", type=EventType.DEBIT, amount="9999999999.99"),
        _event(event_id="e2", type=EventType.DEBIT, amount="9999999999.99"),
        _event(event_id="e3", type=EventType.CREDIT, amount="1.00"),
    ]
    message = render_digest(TEMPLATES, "dg-big", events, OPENID)
    assert "amount4" not in message["data"]
    assert _values(message)["amount5"] == "1.00元"
    assert check_data(load_templates()[message["template_id"]].keys, message["data"]) is None


@pytest.mark.parametrize(
    ("counterparty", "shown"),
    [
        ("Star\u202ebucks\u2028", "Starbucks"),
        ("To 6222.0202.9999.7777", "To ****7777"),
        ("To 6222\u200b0202\u200b9999\u200b7777", "To ****7777"),
        ("\u200b\u2060", None),  # nothing visible left (an entry queued before the gateway refused these)
    ],
)
def test_the_counterparty_is_shown_masked_and_without_invisible_characters(
    counterparty: str, shown: str | None
) -> None:
    assert (
        _values(render_event(TEMPLATES, _event(counterparty=counterparty), OPENID, KEY_ID)).get("thing6")
        == shown
    )
