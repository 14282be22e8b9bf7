"""Masking as a property: whatever account and free text core banking sends, no more than the last 4 digits
of the account, or of any run of digits in the counterparty, ever reach a rendered template message.

A run of digits is what a reader would read as one number: digits of any script (ASCII, full-width,
Arabic-Indic...) with spaces or dashes between them ("6222 0202 0000 1234" is one card number).
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.core.event import EventType, parse_event
from gateway.core.masking import mask_digit_runs
from tests.support import make_event
from workers.render import Templates, render_digest, render_event

TEMPLATES = Templates.load()
# what reads as one number: digits joined by nothing, spaces or dashes (the masking's own definition)
_RUN = re.compile(r"\d(?:[\s\-\u2010-\u2015\u2212\uff0d]*\d)*")
_FREE_TEXT_KEYS = ("thing1", "thing6")  # the account and the counterparty; the others are amounts and times

_DIGITS = "0123456789" + "０１２３４５６７８９" + "٠١٢٣٤٥٦٧٨٩" + "۰۱۲۳۴۵۶۷۸۹"
_OTHER = "aZ 店-—－·:/#(),."
counterparties = st.text(st.sampled_from(_DIGITS + _OTHER), min_size=1, max_size=64).filter(
    lambda text: bool(text.strip())
)
accounts = st.from_regex(r"[0-9]{8,32}", fullmatch=True)


def longest_run(text: str) -> int:
    """The most digits of one number shown in `text`."""
    return max((sum(char.isdigit() for char in run) for run in _RUN.findall(text)), default=0)


def _values(message: dict[str, Any]) -> dict[str, str]:
    return {key: str(item["value"]) for key, item in message["data"].items()}


@settings(max_examples=300, deadline=None, database=None)
@given(account=accounts, counterparty=counterparties, kind=st.sampled_from(sorted(EventType)))
@example(account="6222020200001234", counterparty="6222 0202 0000 1234", kind=EventType.TRANSFER_OUT)
@example(account="6222020200001234", counterparty="６２２２０２０２００００１２３４", kind=EventType.DEBIT)
@example(account="6222020200001234", counterparty="To 6222-0202-0000-1234", kind=EventType.DEBIT)
def test_no_more_than_four_digits_of_a_number_reach_an_event_template(
    account: str, counterparty: str, kind: EventType
) -> None:
    event = parse_event(make_event(account=account, counterparty=counterparty, type=kind.value))
    values = _values(render_event(TEMPLATES, event, "oUser_mask"))
    assert values["thing1"] == f"尾号{account[-4:]}"
    for key in _FREE_TEXT_KEYS:
        assert longest_run(values.get(key, "")) <= 4, (key, values[key])
    assert account not in "".join(values.values())


@settings(max_examples=100, deadline=None, database=None)
@given(account_list=st.lists(accounts, min_size=1, max_size=5), counterparty=counterparties)
def test_no_more_than_four_digits_of_an_account_reach_a_digest(
    account_list: list[str], counterparty: str
) -> None:
    events = [
        parse_event(make_event(account=account, counterparty=counterparty, type="debit"))
        for account in account_list
    ]
    values = _values(render_digest(TEMPLATES, "dg-mask", events, "oUser_mask"))
    assert longest_run(values["thing1"]) <= 4
    assert values["thing1"].startswith("尾号")
    assert all(account not in "".join(values.values()) for account in account_list)


@settings(max_examples=300, deadline=None, database=None)
@given(text=counterparties)
def test_masking_keeps_text_without_long_numbers_and_the_last_four_of_each(text: str) -> None:
    masked = mask_digit_runs(text)
    assert longest_run(masked) <= 4
    if longest_run(text) <= 4:
        assert masked == text  # nothing to hide: the text is shown as sent
    for run in _RUN.findall(text):
        digits = [char for char in run if char.isdigit()]
        if len(digits) > 4:
            assert "****" + "".join(digits[-4:]) in masked
