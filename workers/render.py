"""Render an event (or a digest of held events) into a WeChat template message, within WeChat's value rules.

The account shows as 尾号1234, amounts as 1,234.56元, times in Asia/Shanghai. Each value is checked against
its key's category rule (WECHAT_API.md s.2); text is cut to fit, a value that cannot fit raises RenderError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from decimal import ROUND_DOWN, Decimal
from importlib import resources
from typing import Any

from gateway.core.event import Event, EventType
from gateway.core.masking import account_tail, mask_digit_runs

# Asia/Shanghai has been UTC+8 without daylight saving since 1991; a fixed offset needs no tz database.
SHANGHAI = timezone(timedelta(hours=8), "Asia/Shanghai")
_SYMBOLS = {"CNY": ("", "元"), "USD": ("$", ""), "EUR": ("€", ""), "GBP": ("£", ""), "JPY": ("¥", "")}
OUTFLOWS = frozenset(
    {
        EventType.DEBIT,
        EventType.CARD_PURCHASE,
        EventType.TRANSFER_OUT,
        EventType.ATM_WITHDRAWAL,
        EventType.LOAN_REPAYMENT,
    }
)
_CHINESE = re.compile(r"^[\u4e00-\u9fff]+$")


class RenderError(ValueError):
    """The event cannot be shown within WeChat's rules (a configuration or data problem: dead-letter it)."""


@dataclass(frozen=True)
class Templates:
    labels: dict[str, str]
    event_templates: dict[str, str]
    event_fields: dict[str, str]
    digest_template: str
    digest_fields: dict[str, str]

    @staticmethod
    def load() -> Templates:
        raw = json.loads(resources.files("workers").joinpath("templates.json").read_text(encoding="utf-8"))
        raw.pop("comment", None)
        return Templates(**raw)

    def template_ids(self) -> set[str]:
        return {*self.event_templates.values(), self.digest_template}

    def with_ids(self, ids: Mapping[str, str]) -> Templates:
        """The same templates registered under another official account: WeChat gives each account its own
        template ids. `ids` maps each event type and "digest" to one (PUSHGW_WECHAT_TEMPLATES checks it)."""
        return replace(
            self,
            event_templates={kind: ids[kind] for kind in self.event_templates},
            digest_template=ids["digest"],
        )


def format_amount(amount: str, currency: str) -> str:
    """1234.5 CNY -> 1,234.50元. From 100 million on, whole units (cut, never rounded up), so a large
    transfer still gets its alert within WeChat's 10 digits. Raises RenderError past 10 digits of units."""
    prefix, suffix = _SYMBOLS[currency]
    value = Decimal(amount)
    text = f"{value:,.2f}" if currency != "JPY" else f"{value:,.0f}"
    if _digits(text) > 10:
        text = f"{value.to_integral_value(rounding=ROUND_DOWN):,.0f}"
        if _digits(text) > 10:
            raise RenderError("amount has more digits than a WeChat amount value allows")
    return f"{prefix}{text}{suffix}"


def _digits(text: str) -> int:
    return sum(map(str.isdigit, text))


def format_time(moment: datetime) -> str:
    local = moment.astimezone(SHANGHAI)  # formatted by hand: strftime costs twice as much, on every message
    return f"{local.year}年{local.month:02d}月{local.day:02d}日 {local.hour:02d}:{local.minute:02d}"


def fit(key: str, value: str) -> str:
    """Check `value` against the rule of the key's category; cut text that may be cut."""
    category = key.rstrip("0123456789")
    if category == "thing":
        return value if len(value) <= 20 else value[:19] + "…"
    if category == "phrase":
        if len(value) > 5 or not _CHINESE.match(value):
            raise RenderError(f"{key} must be at most 5 Chinese characters")
        return value
    if category in {"amount", "time"}:
        return value
    raise RenderError(f"template key {key} has a category this gateway does not render")


def _event_values(event: Event, labels: dict[str, str]) -> dict[str, str | None]:
    balance = event.balance if event.balance is not None and not event.balance.startswith("-") else None
    return {
        "account": account_tail(event.account),
        "occurred_at": format_time(datetime.fromisoformat(event.occurred_at)),
        "label": labels[event.type],
        "amount": format_amount(event.amount, event.currency),
        "balance": format_amount(balance, event.currency) if balance is not None else None,
        "counterparty": mask_digit_runs(event.counterparty) if event.counterparty else None,
    }


def _message(
    openid: str, template_id: str, fields: dict[str, str], values: dict[str, str | None], client_msg_id: str
) -> dict[str, Any]:
    data = {
        key: {"value": fit(key, value)}
        for key, source in fields.items()
        if (value := values[source]) is not None
    }
    return {"touser": openid, "template_id": template_id, "client_msg_id": client_msg_id, "data": data}


def render_event(templates: Templates, event: Event, openid: str) -> dict[str, Any]:
    """The template-send body for one event; client_msg_id is the event id on every attempt."""
    values = _event_values(event, templates.labels)
    template_id = templates.event_templates[event.type]
    return _message(openid, template_id, templates.event_fields, values, event.event_id)


def render_digest(templates: Templates, digest_id: str, events: list[Event], openid: str) -> dict[str, Any]:
    """One message for events held by the rate limit: how many, since when, and CNY totals out and in."""
    debit = sum((Decimal(e.amount) for e in events if e.type in OUTFLOWS and e.currency == "CNY"), Decimal(0))
    credit = sum(
        (Decimal(e.amount) for e in events if e.type not in OUTFLOWS and e.currency == "CNY"), Decimal(0)
    )
    accounts = {e.account[-4:] for e in events}
    first = min(events, key=lambda e: datetime.fromisoformat(e.occurred_at))
    values: dict[str, str | None] = {
        "account": account_tail(first.account) + ("等" if len(accounts) > 1 else ""),
        "since": format_time(datetime.fromisoformat(first.occurred_at)),
        "summary": f"{len(events)}笔动账",
        "debit_total": format_amount(str(debit), "CNY"),
        "credit_total": format_amount(str(credit), "CNY"),
    }
    return _message(openid, templates.digest_template, templates.digest_fields, values, digest_id)
