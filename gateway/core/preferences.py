"""A customer's preferences: which alerts they want, and their quiet hours.

The document is validated here and compiled into the fields the ingest and digest scripts read: muted types
as ",debit,refund,", each minimum amount in cents, and quiet hours as local minutes with the time zone's UTC
offsets for the next years (Lua has no time zone database; `utc_offsets` precomputes the transitions).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from gateway.core.errors import Unprocessable
from gateway.core.event import EventType, amount_cents, check_amount

DEFAULT_TZ = "Asia/Shanghai"
OFFSET_YEARS = 10  # saving the preferences again extends the table
_FIELDS = frozenset({"muted_types", "min_amount", "quiet_hours"})
_QUIET_FIELDS = frozenset({"start", "end", "tz"})
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_TZ_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+-]{0,30}(/[A-Za-z0-9_+-]{1,30}){0,2}")
EMPTY: dict[str, Any] = {"muted_types": [], "min_amount": {}, "quiet_hours": None}


def _unknown(names: object, allowed: frozenset[str], where: str) -> None:
    for name in names:  # type: ignore[attr-defined]
        if name not in allowed:
            field = f"{where}{str(name)[:64]}"
            raise Unprocessable(f"unknown field {field!r}", code="unknown_field", field=field)


def _event_type(value: Any, field: str) -> str:
    if not isinstance(value, str) or value not in set(EventType):
        raise Unprocessable(f"{field} must be one of {', '.join(EventType)}", field=field)
    return value


def _muted(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise Unprocessable("muted_types must be a list of event types", field="muted_types")
    return sorted({_event_type(item, "muted_types") for item in value})


def _min_amount(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise Unprocessable(
            'min_amount must map event types to amounts, e.g. {"debit": "100.00"}', field="min_amount"
        )
    return {
        _event_type(kind, "min_amount"): check_amount(amount, f"min_amount.{kind}")
        for kind, amount in sorted(value.items())
    }


def _clock(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise Unprocessable(f"{field} must be a local time HH:MM", field=field)
    return value


def zone(name: Any, field: str = "quiet_hours.tz") -> ZoneInfo:
    """An IANA time zone by name; raises Unprocessable."""
    if not isinstance(name, str) or not _TZ_NAME.fullmatch(name):
        raise Unprocessable(f"{field} must be an IANA time zone such as {DEFAULT_TZ}", field=field)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory of zones, e.g. "America"
        raise Unprocessable(f"{field} is not a known time zone", field=field) from None


def _quiet_hours(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Unprocessable(
            'quiet_hours must be {"start": "HH:MM", "end": "HH:MM", "tz": ...}', field="quiet_hours"
        )
    _unknown(value, _QUIET_FIELDS, "quiet_hours.")
    for name in ("start", "end"):
        if name not in value:
            raise Unprocessable(
                f"quiet_hours.{name} is required", code="missing_field", field=f"quiet_hours.{name}"
            )
    quiet = {
        "start": _clock(value["start"], "quiet_hours.start"),
        "end": _clock(value["end"], "quiet_hours.end"),
    }
    if quiet["start"] == quiet["end"]:
        raise Unprocessable("quiet_hours.start and end must differ", field="quiet_hours.end")
    quiet["tz"] = value.get("tz") or DEFAULT_TZ
    zone(quiet["tz"])
    return quiet


def parse_preferences(data: object) -> dict[str, Any]:
    """The normalised document; every field optional (a missing one means "no such preference")."""
    if not isinstance(data, dict):
        raise Unprocessable("body must be a JSON object", field="")
    _unknown(data, _FIELDS, "")
    return {
        "muted_types": _muted(data.get("muted_types", [])),
        "min_amount": _min_amount(data.get("min_amount", {})),
        "quiet_hours": _quiet_hours(data.get("quiet_hours")),
    }


def _minutes(clock: str) -> int:
    hours, minutes = clock.split(":")
    return int(hours) * 60 + int(minutes)


def _offset_min(tz: ZoneInfo, at_s: int) -> int:
    offset = datetime.fromtimestamp(at_s, tz).utcoffset() or timedelta()
    return int(offset.total_seconds()) // 60


def utc_offsets(tz: ZoneInfo, from_s: int, years: int = OFFSET_YEARS) -> list[tuple[int, int]]:
    """(from unix ms, UTC offset in minutes) for `years` from `from_s`, the first one valid from the start.

    Steps a week at a time (zones change offset at most a few times a year), then finds each transition to
    the second by bisection."""
    offsets = [(0, _offset_min(tz, from_s))]
    step_s, end_s, at_s = 7 * 86400, from_s + years * 366 * 86400, from_s
    while at_s < end_s:
        later_s = at_s + step_s
        if _offset_min(tz, later_s) != offsets[-1][1]:
            low, high = at_s, later_s  # offset(low) is the current one, offset(high) the next
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if _offset_min(tz, middle) == offsets[-1][1] else (low, middle)
            offsets.append((high * 1000, _offset_min(tz, high)))
        at_s = later_s
    return offsets


def compile_preferences(doc: dict[str, Any], now_s: int) -> dict[str, str]:
    """The preferences hash: the document and what the scripts read."""
    fields = {"doc": orjson.dumps(doc).decode()}
    if doc["muted_types"]:
        fields["muted"] = f",{','.join(doc['muted_types'])},"
    for kind, amount in doc["min_amount"].items():
        fields[f"min:{kind}"] = amount_cents(amount)
    if quiet := doc["quiet_hours"]:
        fields["quiet"] = f"{_minutes(quiet['start'])},{_minutes(quiet['end'])}"
        offsets = utc_offsets(ZoneInfo(quiet["tz"]), now_s)
        fields["tz"] = ",".join(f"{from_ms}:{minutes}" for from_ms, minutes in offsets)
    return fields
