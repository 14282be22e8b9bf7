"""Masking as a property: whatever account and free text core banking sends, no more than the last 4 digits
of the account, or of any number in the counterparty, ever reach a rendered template message, and nothing
invisible does (issue 16, part 3).

A number is what a reader would read as one: digits of any script (ASCII, full-width, Arabic-Indic...) with
any run of characters that are neither letters nor digits between them ("6222 0202", "6222.0202",
"6222/0202", "6222_0202"), once the invisible characters (zero-width space, word joiner, bidi overrides,
Hangul fillers...) are gone: those must not split a number unseen.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from gateway.core.errors import Unprocessable
from gateway.core.event import EventType, parse_event
from gateway.core.masking import is_hidden, mask_digit_runs, visible
from tests.support import KEY_ID, make_event
from wechatsim.catalog import load_templates
from wechatsim.rules import check_data
from workers.render import Templates, render_digest, render_event

TEMPLATES = Templates.load()
SIM_TEMPLATES = load_templates()
_FREE_TEXT_KEYS = ("thing1", "thing6")  # the account and the counterparty; the others are amounts and times

# The test's own definitions, written apart from masking.py's. Invisible: these general categories, and the
# default-ignorable letters and marks the property tests use.
_HIDDEN_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}
_HIDDEN_LETTERS_AND_MARKS = "\u115f\u1160\u3164\uffa0\u034f\ufe0f\u180b"
# one number: digits joined by runs of anything that is neither a letter nor a digit (\W, or the underscore)
_RUN = re.compile(r"\d(?:(?:[^\w]|_)*\d)*")


def _hidden(char: str) -> bool:
    return unicodedata.category(char) in _HIDDEN_CATEGORIES or char in _HIDDEN_LETTERS_AND_MARKS


def _seen(text: str) -> str:
    return "".join(char for char in text if not _hidden(char))


def longest_run(text: str) -> int:
    """The most digits of one number shown in `text`, as a reader sees it."""
    return max((sum(char.isdigit() for char in run) for run in _RUN.findall(_seen(text))), default=0)


def _values(message: dict[str, Any]) -> dict[str, str]:
    return {key: str(item["value"]) for key, item in message["data"].items()}


_DIGITS = "0123456789" + "０１２３４５６７８９" + "٠١٢٣٤٥٦٧٨٩" + "۰۱۲۳۴۵۶۷۸۹" + "०१२३४५६७८९"
# what may stand between the groups of a number: visible separators of every kind and invisible characters
SEPARATORS = (
    " .,/_-—－·:#()\\|+*~'\"\u3000\u00a0\u2002\u3001\u3002"
    "\u200b\u200c\u200d\u2060\ufeff\u00ad\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
    "\u2028\u2029\u0085\u009b" + _HIDDEN_LETTERS_AND_MARKS
)
C0_CONTROLS = "\t\n\r\x00\x1b\x7f"  # refused at ingress (422), and removed by masking all the same
_LETTERS = "aZ店上海银行ßдאب"
counterparties = st.text(st.sampled_from(_DIGITS + _LETTERS + SEPARATORS), min_size=1, max_size=64)
free_texts = st.text(st.sampled_from(_DIGITS + _LETTERS + SEPARATORS + C0_CONTROLS), max_size=80)
accounts = st.from_regex(r"[0-9]{8,32}", fullmatch=True)


def _parse_or_skip(**fields: Any) -> Any:
    """The event if the gateway accepts it (a 202); a refused one is no concern of rendering."""
    try:
        return parse_event(make_event(**fields))
    except Unprocessable:
        reject()


@settings(max_examples=300, deadline=None, database=None)
@given(account=accounts, counterparty=counterparties, kind=st.sampled_from(sorted(EventType)))
@example(account="6222020200001234", counterparty="6222 0202 0000 1234", kind=EventType.TRANSFER_OUT)
@example(account="6222020200001234", counterparty="６２２２０２０２００００１２３４", kind=EventType.DEBIT)
@example(account="6222020200001234", counterparty="To 6222-0202-0000-1234", kind=EventType.DEBIT)
@example(account="6222020299997777", counterparty="6222.0202.9999.7777", kind=EventType.DEBIT)
@example(account="6222020299997777", counterparty="6222\u200b0202\u200b9999\u200b7777", kind=EventType.DEBIT)
def test_no_more_than_four_digits_of_a_number_reach_an_event_template(
    account: str, counterparty: str, kind: EventType
) -> None:
    event = _parse_or_skip(account=account, counterparty=counterparty, type=kind.value)
    message = render_event(TEMPLATES, event, "oUser_mask", KEY_ID)
    values = _values(message)
    assert values["thing1"] == f"尾号{account[-4:]}"
    for key in _FREE_TEXT_KEYS:
        assert longest_run(values.get(key, "")) <= 4, (key, values[key])
        assert not any(map(_hidden, values.get(key, ""))), (key, values[key])
    assert account not in "".join(values.values())
    assert check_data(SIM_TEMPLATES[message["template_id"]].keys, message["data"]) is None


@settings(max_examples=100, deadline=None, database=None)
@given(account_list=st.lists(accounts, min_size=1, max_size=5), counterparty=counterparties)
def test_no_more_than_four_digits_of_an_account_reach_a_digest(
    account_list: list[str], counterparty: str
) -> None:
    events = [
        _parse_or_skip(account=account, counterparty=counterparty, type="debit") for account in account_list
    ]
    values = _values(render_digest(TEMPLATES, "dg-mask", events, "oUser_mask"))
    assert longest_run(values["thing1"]) <= 4
    assert values["thing1"].startswith("尾号")
    assert all(account not in "".join(values.values()) for account in account_list)


@settings(max_examples=300, deadline=None, database=None)
@given(text=free_texts)
def test_masking_keeps_text_without_long_numbers_and_the_last_four_of_each(text: str) -> None:
    masked = mask_digit_runs(text)
    assert longest_run(masked) <= 4
    assert not any(map(_hidden, masked))
    assert mask_digit_runs(masked) == masked  # idempotent
    if longest_run(text) <= 4:
        assert masked == _seen(text)  # nothing to hide: the text is shown as sent, less what nobody sees
    for run in _RUN.findall(_seen(text)):
        digits = [char for char in run if char.isdigit()]
        if len(digits) > 4:
            assert "****" + "".join(digits[-4:]) in masked


# -- card numbers hidden in free text: grouped in any way, in any digit script, anywhere -------------------


@st.composite
def cards_in_text(draw: st.DrawFn, separators: str = SEPARATORS + C0_CONTROLS) -> tuple[str, list[int]]:
    """Free text holding a card number of 12-19 digits (each digit of any script), its groups of 1-6 digits
    joined by runs of 1-3 separators, at a random place among letters, punctuation and invisible characters.
    Returns the text and the card's digit values."""
    digits = draw(st.lists(st.characters(categories=["Nd"]), min_size=12, max_size=19))
    pieces: list[str] = []
    index = 0
    while index < len(digits):
        size = draw(st.integers(1, 6))
        if pieces:
            pieces.append(draw(st.text(st.sampled_from(separators), min_size=1, max_size=3)))
        pieces.append("".join(digits[index : index + size]))
        index += size
    around = st.text(st.sampled_from(_LETTERS + "Starbucks 转账给 " + separators), max_size=12)
    before, after = draw(around), draw(around)
    return before + "".join(pieces) + after, [unicodedata.digit(char) for char in digits]


def _digit_values(text: str) -> list[int]:
    return [unicodedata.digit(char) for char in text if char.isdigit()]


def _shows_five_in_a_row(shown: list[int], card: list[int]) -> bool:
    windows = {tuple(card[start : start + 5]) for start in range(len(card) - 4)}
    return any(tuple(shown[start : start + 5]) in windows for start in range(len(shown) - 4))


@settings(max_examples=500, deadline=None, database=None)
@given(case=cards_in_text())
@example(case=("6222.0202.9999.7777", [6, 2, 2, 2, 0, 2, 0, 2, 9, 9, 9, 9, 7, 7, 7, 7]))
@example(
    case=("pay 6222\u2060/\u202e0202_9999\u31647777 ok", [6, 2, 2, 2, 0, 2, 0, 2, 9, 9, 9, 9, 7, 7, 7, 7])
)
def test_a_card_number_however_grouped_shows_only_its_last_four(case: tuple[str, list[int]]) -> None:
    text, card = case
    masked = mask_digit_runs(text)
    shown = _digit_values(masked)
    assert shown == card[-4:], (text, masked)  # the text around holds no digits: only the card's tail is left
    assert not _shows_five_in_a_row(shown, card)
    assert not any(map(_hidden, masked)), masked


@settings(max_examples=300, deadline=None, database=None)
@given(case=cards_in_text(SEPARATORS))
def test_a_card_number_however_grouped_never_reaches_a_template(case: tuple[str, list[int]]) -> None:
    text, card = case
    event = _parse_or_skip(counterparty=text)  # the gateway refuses some (over 64 characters)
    message = render_event(TEMPLATES, event, "oUser_mask", KEY_ID)
    shown = "".join(_values(message).values())
    assert not _shows_five_in_a_row(_digit_values(_values(message).get("thing6", "")), card), shown
    assert not any(map(_hidden, shown)), shown
    assert check_data(SIM_TEMPLATES[message["template_id"]].keys, message["data"]) is None


# -- the findings, one by one (each failed before issue 16) -----------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "6222.0202.9999.7777",
        "6222/0202/9999/7777",
        "6222_0202_9999_7777",
        "6222\u200b0202\u200b9999\u200b7777",  # zero-width space
        "6222\u20600202\u20609999\u20607777",  # word joiner
        "6222\u31640202\u31649999\u31647777",  # Hangul filler: a letter by category, and invisible
        "6222 . 0202 / 9999 _ 7777",
        "6222\u30000202\u30009999\u30007777",  # ideographic space
        "６２２２．０２０２．９９９９．７７７７",
        "٦٢٢٢/٠٢٠٢/٩٩٩٩/٧٧٧٧",
    ],
)
def test_a_card_number_grouped_by_any_separator_is_masked(text: str) -> None:
    masked = mask_digit_runs(text)
    assert len(masked) == 8
    assert masked.startswith("****")
    assert _digit_values(masked) == [7, 7, 7, 7]


@pytest.mark.parametrize(
    ("text", "seen"),
    [
        ("Star\u202ebucks", "Starbucks"),  # right-to-left override
        ("Star\u2066bucks\u2069", "Starbucks"),  # isolates
        ("Star\u2028bucks\u2029", "Starbucks"),  # line and paragraph separators
        ("\ufeffStar\u200dbucks\u00ad", "Starbucks"),  # BOM, zero-width joiner, soft hyphen
        ("Star\u0085bucks\u009b", "Starbucks"),  # C1 controls
        ("上海\u200b银行", "上海银行"),
    ],
)
def test_invisible_characters_never_reach_a_template(text: str, seen: str) -> None:
    assert visible(text) == seen
    assert mask_digit_runs(text) == seen
    event = parse_event(make_event(counterparty=text))
    assert _values(render_event(TEMPLATES, event, "oUser_mask", KEY_ID))["thing6"] == seen


def test_the_hidden_set_covers_the_default_ignorable_letters_and_marks() -> None:
    assert all(is_hidden(char) for char in _HIDDEN_LETTERS_AND_MARKS)
    assert not any(is_hidden(char) for char in "a 店\u3000.٣")
