"""Render an event (or a digest of held events) into a WeChat template message, within WeChat's value rules.

The account shows as 尾号1234, amounts as 1,234.56元, times in Asia/Shanghai (`gateway.core.display`,
which the ingress validator shares: what it accepts renders), free text masked and without invisible
characters (`gateway.core.masking`). Each value is checked against its key's category rule (WECHAT_API.md
s.2); text is cut to fit, an optional value that cannot be shown is left out, a required one that cannot
raises RenderError.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from importlib import resources
from typing import Any

from gateway.core.display import AMOUNT_DIGITS, digit_count
from gateway.core.display import SHANGHAI as SHANGHAI
from gateway.core.display import RenderError as RenderError
from gateway.core.display import format_amount as format_amount
from gateway.core.display import format_time as format_time
from gateway.core.event import Event, EventType
from gateway.core.masking import account_tail, mask_digit_runs

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
# WeChat documents no maximum for the template send's client_msg_id; its mass send's `clientmsgid` takes 64
# bytes at most (errcode 45067 past it), so ours keep to that (docs/wechat_api.md s.2)
CLIENT_MSG_ID_MAX = 64
_PACKAGED_TEMPLATES = resources.files("workers").joinpath("templates.json").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Templates:
    labels: dict[str, str]
    event_templates: dict[str, str]
    event_fields: dict[str, str]
    digest_template: str
    digest_fields: dict[str, str]

    @staticmethod
    def load() -> Templates:
        """The packaged templates (read at import: a worker loads them inside its event loop)."""
        raw = json.loads(_PACKAGED_TEMPLATES)
        raw.pop("comment", None)
        return Templates(**raw)

    @cached_property
    def event_plan(self) -> tuple[tuple[str, str, str], ...]:
        """The event template's fields as `_message` walks them (worked out once, not per message)."""
        return _plan(self.event_fields)

    @cached_property
    def digest_plan(self) -> tuple[tuple[str, str, str], ...]:
        return _plan(self.digest_fields)

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


def fit(key: str, value: str) -> str:
    """Check `value` against the rule of the key's category; cut text that may be cut."""
    return _fit(key.rstrip("0123456789"), key, value)


def _fit(category: str, key: str, value: str) -> str:
    if category == "thing":
        return value if len(value) <= 20 else value[:19] + "…"
    if category == "phrase":
        if len(value) > 5 or not _CHINESE.match(value):
            raise RenderError(f"{key} must be at most 5 Chinese characters")
        return value
    if category == "amount":
        if digit_count(value) > AMOUNT_DIGITS:
            raise RenderError(f"{key} has more digits than a WeChat amount value allows")
        return value
    if category == "time":
        return value
    raise RenderError(f"template key {key} has a category this gateway does not render")


def _optional_amount(amount: str | None, currency: str) -> str | None:
    """An amount the message may go without: left out when negative (an overdrawn balance) or when it has
    more digits than WeChat shows (a corporate balance, a digest total): the alert still goes."""
    if amount is None or amount.startswith("-"):
        return None
    try:
        return format_amount(amount, currency)
    except RenderError:
        return None


def _free_text(text: str | None) -> str | None:
    """Free text as it may be shown (masked, invisible characters gone); None when nothing is left to see."""
    shown = mask_digit_runs(text) if text else ""
    return shown if shown.strip() else None


def _event_values(event: Mapping[str, Any], labels: dict[str, str]) -> dict[str, str | None]:
    """The shown values of one event, from its fields as the gateway accepted them (an Event's `to_dict`, or
    the JSON a stream entry carries: absent optional fields are None)."""
    currency = event["currency"]
    return {
        "account": account_tail(event["account"]),
        "occurred_at": format_time(datetime.fromisoformat(event["occurred_at"])),
        "label": labels[event["type"]],
        "amount": format_amount(event["amount"], currency),  # the ingress validator made sure it shows
        "balance": _optional_amount(event.get("balance"), currency),
        "counterparty": _free_text(event.get("counterparty")),
    }


def _plan(fields: dict[str, str]) -> tuple[tuple[str, str, str], ...]:
    """(key, value source, key category) of each template field, in the template's order."""
    return tuple((key, source, key.rstrip("0123456789")) for key, source in fields.items())


def _message(
    openid: str,
    template_id: str,
    plan: tuple[tuple[str, str, str], ...],
    values: dict[str, str | None],
    client_msg_id: str,
) -> dict[str, Any]:
    data = {
        key: {"value": _fit(category, key, value)}
        for key, source, category in plan
        if (value := values[source]) is not None
    }
    return {"touser": openid, "template_id": template_id, "client_msg_id": client_msg_id, "data": data}


def client_msg_id(source: str, event_id: str) -> str:
    """WeChat's dedup key (`touser + client_msg_id`, 10 minutes) for one event: the same on every attempt,
    distinct per (source, event id), since an event id is unique only within its source (DESIGN.md), and at
    most CLIENT_MSG_ID_MAX characters. `source/event_id` when that fits (a key id and an event id never hold a
    `/`); else `h-` and the first 62 hex digits of SHA-256 over both, which holds no `/` and so never equals
    the readable form of another pair (nor a digest's `dg-` id)."""
    if "/" in source or "/" in event_id:
        raise ValueError("a source or event id holds a '/'")
    readable = f"{source}/{event_id}"
    if len(readable) <= CLIENT_MSG_ID_MAX:
        return readable
    digest = hashlib.sha256(f"{source}\n{event_id}".encode()).hexdigest()
    return "h-" + digest[: CLIENT_MSG_ID_MAX - 2]


def render_event(templates: Templates, event: Event, openid: str, source: str) -> dict[str, Any]:
    """The template-send body for one event of `source` (the sending key id); its client_msg_id is
    `client_msg_id(source, event id)` on every attempt."""
    return render_fields(templates, event.to_dict(), openid, source)


def render_fields(templates: Templates, event: Mapping[str, Any], openid: str, source: str) -> dict[str, Any]:
    """`render_event` from the event's fields (the JSON a stream entry carries), without building an Event
    first: the worker's path, on every delivery. Raises RenderError, or another exception (KeyError,
    ValueError, OverflowError, ...) on fields the gateway would not have accepted (both dead-lettered)."""
    values = _event_values(event, templates.labels)
    template_id = templates.event_templates[event["type"]]
    return _message(
        openid, template_id, templates.event_plan, values, client_msg_id(source, event["event_id"])
    )


def render_digest(templates: Templates, digest_id: str, events: list[Event], openid: str) -> dict[str, Any]:
    """One message for events held by the rate limit: how many, since when, and CNY totals out and in (a
    total past WeChat's 10 digits is left out: each event fits, their sum may not)."""
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
        "debit_total": _optional_amount(str(debit), "CNY"),
        "credit_total": _optional_amount(str(credit), "CNY"),
    }
    return _message(openid, templates.digest_template, templates.digest_plan, values, digest_id)
