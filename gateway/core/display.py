"""How an event's amounts and times show in a WeChat template message, within WeChat's value rules.

One definition for both sides: the worker's render shows values with these functions, and the ingress
validator (`event.parse_event`) accepts an event only if they can show it, so an event answered 202 never
fails at render.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal

# Asia/Shanghai has been UTC+8 without daylight saving since 1991; a fixed offset needs no tz database.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
# (prefix, suffix) of each currency an event may carry: this table is the list of currencies.
CURRENCY_SYMBOLS: dict[str, tuple[str, str]] = {
    "CNY": ("", "元"),
    "USD": ("$", ""),
    "EUR": ("€", ""),
    "GBP": ("£", ""),
    "JPY": ("¥", ""),
}
# WeChat's `amount` category: one currency symbol and at most 10 digits (WECHAT_API.md s.2)
AMOUNT_DIGITS = 10


class RenderError(ValueError):
    """A value cannot be shown within WeChat's rules (a configuration or data problem: dead-letter it)."""


def digit_count(text: str) -> int:
    return sum(map(str.isdigit, text))


def format_amount(amount: str, currency: str) -> str:
    """1234.5 CNY -> 1,234.50元. From 100 million on, whole units (cut, never rounded up), so a large
    transfer still gets its alert within WeChat's 10 digits. Raises RenderError past 10 digits of units."""
    prefix, suffix = CURRENCY_SYMBOLS[currency]
    value = Decimal(amount)
    text = f"{value:,.2f}" if currency != "JPY" else f"{value:,.0f}"
    if digit_count(text) > AMOUNT_DIGITS:
        text = f"{value.to_integral_value(rounding=ROUND_DOWN):,.0f}"
        if digit_count(text) > AMOUNT_DIGITS:
            raise RenderError(
                f"amount has more than {AMOUNT_DIGITS} digits of whole units: more than a WeChat amount "
                "value allows"
            )
    return f"{prefix}{text}{suffix}"


def format_time(moment: datetime) -> str:
    """An aware datetime as 2026年11月22日 10:00, in Asia/Shanghai."""
    local = moment.astimezone(SHANGHAI)  # formatted by hand: strftime costs twice as much, on every message
    return f"{local.year}年{local.month:02d}月{local.day:02d}日 {local.hour:02d}:{local.minute:02d}"
