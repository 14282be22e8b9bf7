"""The account-change event core banking sends: strict validation, and its canonical form and hash.

Validation accepts only what can be delivered: the amount must show within WeChat's rules by the very function
the worker renders it with (`gateway.core.display`), and free text must have something visible left once
`gateway.core.masking` removes invisible characters. So a 202 never ends as a render dead letter.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from gateway.core.display import CURRENCY_SYMBOLS, RenderError, format_amount
from gateway.core.errors import Unprocessable
from gateway.core.masking import visible


class EventType(StrEnum):
    DEBIT = "debit"
    CREDIT = "credit"
    CARD_PURCHASE = "card_purchase"
    TRANSFER_OUT = "transfer_out"
    TRANSFER_IN = "transfer_in"
    ATM_WITHDRAWAL = "atm_withdrawal"
    LOAN_REPAYMENT = "loan_repayment"
    REFUND = "refund"


CURRENCIES = frozenset(CURRENCY_SYMBOLS)  # exactly those render can show
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
# re.ASCII: a bare \d also matches other scripts' digits ("６２２２", "1٣"), which no bank system sends
_ACCOUNT = re.compile(r"\d{8,32}", re.ASCII)
_AMOUNT = re.compile(r"(0|[1-9]\d{0,14})(\.\d{1,2})?", re.ASCII)
_BALANCE = re.compile(r"-?(0|[1-9]\d{0,14})(\.\d{1,2})?", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_FIRST_YEAR, _LAST_YEAR = 1970, 9998


@dataclass(frozen=True, slots=True)
class Event:
    """A validated event. `account` is the full number: it never leaves the gateway unmasked."""

    event_id: str
    customer_id: str
    account: str
    type: EventType
    amount: str
    currency: str
    occurred_at: str
    balance: str | None = None
    counterparty: str | None = None
    channel: str | None = None
    priority: str = "normal"
    fallback: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name in self.__slots__ if (value := getattr(self, name)) is not None}

    def canonical_json(self) -> bytes:
        """Stable bytes of the event: the same event in any key order or spacing gives the same bytes."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Event:
        """Rebuild an event the gateway validated before (from a stream entry); no checks."""
        return Event(**{**data, "type": EventType(data["type"])})


def payload_hash(canonical: bytes) -> str:
    return hashlib.sha256(canonical).hexdigest()


def _text(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise Unprocessable(f"{name} must be a string", field=name)
    if len(value) > max_len or _CONTROL.search(value) or not visible(value).strip():
        raise Unprocessable(f"{name} must be 1 to {max_len} printable characters", field=name)
    return value


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str):
            raise Unprocessable(f"{name} must be a string", field=name)
        if not pattern.fullmatch(value):
            raise Unprocessable(f"{name} must be {what}", field=name)
        return value

    return check


_id = _pattern(_ID, "1 to 64 letters, digits or . _ : - (starting with a letter or digit)")
_account = _pattern(_ACCOUNT, "8 to 32 digits")
_balance = _pattern(_BALANCE, 'a decimal string with at most 2 decimals, e.g. "5678.90"')


def check_amount(value: Any, name: str) -> str:
    """A positive decimal string with at most 2 decimals; raises Unprocessable naming `name`."""
    return _amount(value, name)


def amount_cents(amount: str) -> str:
    """A validated amount ("1234.5") in cents ("123450"): digits without leading zeros, for exact comparison
    in Lua. String work, not Decimal: it runs for every event."""
    units, _, cents = amount.partition(".")
    return (units + cents.ljust(2, "0")).lstrip("0") or "0"


_decimal = _pattern(_AMOUNT, 'a positive decimal string with at most 2 decimals, e.g. "1234.56"')


def _amount(value: Any, name: str) -> str:
    amount = _decimal(value, name)
    if not amount.strip("0."):  # only zeros (the pattern admits no other spelling of zero)
        raise Unprocessable(f"{name} must be greater than zero", field=name)
    return amount


def _choice(options: frozenset[str]) -> Callable[[Any, str], str]:
    def check(value: Any, name: str) -> str:
        if not isinstance(value, str) or value not in options:
            raise Unprocessable(f"{name} must be one of {', '.join(sorted(options))}", field=name)
        return value

    return check


def _occurred_at(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 40:
        raise Unprocessable(f"{name} must be an ISO-8601 string with a time zone", field=name)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise Unprocessable(f"{name} must be an ISO-8601 date-time", field=name) from None
    if moment.tzinfo is None:
        raise Unprocessable(f"{name} must carry a time zone offset", field=name)
    try:  # the message shows it in the customer's zone: a moment at the ends of the calendar overflows there
        year = moment.astimezone(UTC).year
    except OverflowError:
        year = 0
    if not _FIRST_YEAR <= year <= _LAST_YEAR:
        raise Unprocessable(f"{name} must be between {_FIRST_YEAR} and {_LAST_YEAR}", field=name)
    return value


_REQUIRED: dict[str, Callable[[Any, str], Any]] = {
    "event_id": _id,
    "customer_id": _id,
    "account": _account,
    "type": _choice(frozenset(EventType)),
    "amount": _amount,
    "currency": _choice(CURRENCIES),
    "occurred_at": _occurred_at,
}
_OPTIONAL: dict[str, Callable[[Any, str], Any]] = {
    "balance": _balance,
    "counterparty": lambda value, name: _text(value, name, 64),
    "channel": lambda value, name: _text(value, name, 32),
    "priority": _choice(frozenset({"normal", "critical"})),
    "fallback": _choice(frozenset({"sms", "none"})),
}


def parse_event(data: Any) -> Event:
    """Validate one decoded JSON value. Raises Unprocessable naming the first bad, missing or unknown
    field."""
    if not isinstance(data, dict):
        raise Unprocessable("an event must be a JSON object", field="")
    for name in data:
        if name not in _REQUIRED and name not in _OPTIONAL:
            raise Unprocessable(f"unknown field {name[:64]!r}", code="unknown_field", field=name[:64])
    values: dict[str, Any] = {}
    for name, check in _REQUIRED.items():
        if name not in data:
            raise Unprocessable(f"{name} is required", code="missing_field", field=name)
        values[name] = check(data[name], name)
    for name, check in _OPTIONAL.items():
        if name in data and data[name] is not None:
            values[name] = check(data[name], name)
    _check_shown(values)
    values["type"] = EventType(values["type"])
    return Event(**values)


def _check_shown(values: dict[str, Any]) -> None:
    """The amount must fit a WeChat amount value as render shows it (a balance that does not is left out of
    the message instead: the alert still goes)."""
    try:
        format_amount(values["amount"], values["currency"])
    except RenderError as exc:
        raise Unprocessable(str(exc), field="amount") from None
