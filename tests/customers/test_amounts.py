"""Amounts in cents for the Lua comparison with minimum amounts: exact for every amount the event accepts."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.event import amount_cents

_AMOUNTS = st.from_regex(r"(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?", fullmatch=True)


@given(_AMOUNTS)
def test_cents_are_the_decimal_value_times_100(amount: str) -> None:
    assert amount_cents(amount) == str(int(Decimal(amount) * 100))


@given(_AMOUNTS, _AMOUNTS)
def test_comparing_cents_as_digit_strings_is_comparing_amounts(a: str, b: str) -> None:
    """What ingest.lua's below(): shorter is smaller, same length compares as text."""
    ca, cb = amount_cents(a), amount_cents(b)
    below = len(ca) < len(cb) if len(ca) != len(cb) else ca < cb
    assert below == (Decimal(a) < Decimal(b))
