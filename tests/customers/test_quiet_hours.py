"""Quiet hours with an injected clock: the Lua library the ingest and digest scripts share, run in real Redis
on chosen instants, and the time zone offsets the gateway precomputes for it."""

from __future__ import annotations

import asyncio
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.errors import Unprocessable
from gateway.core.preferences import compile_preferences, parse_preferences, utc_offsets

PREFS = keys.preferences(0, "C-quiet")
_LIB = resources.files("gateway.core").joinpath("scripts/lib/quiet.lua").read_text(encoding="utf-8")
_PROBE = _LIB + "return quiet_until_ms(KEYS[1], tonumber(ARGV[1]))"


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


async def _save(redis: Redis, quiet: dict[str, str], *, saved_at: str = "2026-01-01T00:00:00+00:00") -> None:
    # in a thread, as the gateway does: a time zone's first use reads it from disk
    doc = await asyncio.to_thread(parse_preferences, {"quiet_hours": quiet})
    fields = await asyncio.to_thread(compile_preferences, doc, _ms(saved_at) // 1000)
    await redis.delete(PREFS)
    await redis.hset(PREFS, mapping=fields)  # type: ignore[arg-type]


async def _quiet_until(redis: Redis, at: str) -> str | None:
    """When the quiet hours end (ISO, UTC) for a clock showing `at`, or None when not quiet."""
    until: Any = await redis.eval(_PROBE, 1, PREFS, _ms(at))
    if until is None:
        return None
    return datetime.fromtimestamp(int(until) / 1000, ZoneInfo("UTC")).isoformat()


async def test_quiet_hours_across_midnight_in_shanghai(redis: Redis) -> None:
    await _save(redis, {"start": "22:00", "end": "07:00"})  # tz defaults to Asia/Shanghai
    assert await _quiet_until(redis, "2026-11-24T21:59:00+08:00") is None
    assert await _quiet_until(redis, "2026-11-24T22:00:00+08:00") == "2026-11-24T23:00:00+00:00"
    assert await _quiet_until(redis, "2026-11-24T23:59:30+08:00") == "2026-11-24T23:00:00+00:00"
    assert await _quiet_until(redis, "2026-11-25T00:00:00+08:00") == "2026-11-24T23:00:00+00:00"
    assert await _quiet_until(redis, "2026-11-25T06:59:59+08:00") == "2026-11-24T23:00:00+00:00"
    assert await _quiet_until(redis, "2026-11-25T07:00:00+08:00") is None


async def test_quiet_hours_within_one_day(redis: Redis) -> None:
    await _save(redis, {"start": "12:30", "end": "14:00", "tz": "Asia/Shanghai"})
    assert await _quiet_until(redis, "2026-11-24T12:29:59+08:00") is None
    assert await _quiet_until(redis, "2026-11-24T13:15:00+08:00") == "2026-11-24T06:00:00+00:00"
    assert await _quiet_until(redis, "2026-11-24T14:00:00+08:00") is None
    assert await _quiet_until(redis, "2026-11-24T23:00:00+08:00") is None


async def test_the_customers_own_time_zone_decides_not_the_banks(redis: Redis) -> None:
    # 23:30 in Shanghai is 16:30 in London: quiet for a Shanghai customer, not for a London one
    await _save(redis, {"start": "23:00", "end": "06:00", "tz": "Europe/London"})
    assert await _quiet_until(redis, "2026-11-24T23:30:00+08:00") is None
    assert await _quiet_until(redis, "2026-11-25T07:30:00+08:00") == "2026-11-25T06:00:00+00:00"


async def test_daylight_saving_changes_are_followed(redis: Redis) -> None:
    # New York: EST (UTC-5) until 2027-03-14 02:00 local, EDT (UTC-4) after; saved in winter
    await _save(
        redis,
        {"start": "22:00", "end": "07:00", "tz": "America/New_York"},
        saved_at="2026-12-01T00:00:00+00:00",
    )
    assert await _quiet_until(redis, "2027-01-10T23:00:00-05:00") == "2027-01-11T12:00:00+00:00"
    assert await _quiet_until(redis, "2027-06-10T23:00:00-04:00") == "2027-06-11T11:00:00+00:00"
    assert await _quiet_until(redis, "2027-06-10T21:59:00-04:00") is None


def test_offsets_are_precomputed_with_each_transition() -> None:
    saved = _ms("2026-12-01T00:00:00+00:00") // 1000
    offsets = utc_offsets(ZoneInfo("America/New_York"), saved, years=1)
    assert offsets == [
        (0, -300),
        (_ms("2027-03-14T07:00:00+00:00"), -240),
        (_ms("2027-11-07T06:00:00+00:00"), -300),
    ]
    assert utc_offsets(ZoneInfo("Asia/Shanghai"), saved) == [(0, 480)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"colour": "red"}, "colour"),
        ({"muted_types": "debit"}, "muted_types"),
        ({"muted_types": ["salary"]}, "muted_types"),
        ({"min_amount": {"debit": 100}}, "min_amount.debit"),
        ({"min_amount": {"debit": "1.234"}}, "min_amount.debit"),
        ({"min_amount": {"lottery": "1.00"}}, "min_amount"),
        ({"quiet_hours": {"start": "22:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "24:00", "end": "07:00"}}, "quiet_hours.start"),
        ({"quiet_hours": {"start": "07:00", "end": "07:00"}}, "quiet_hours.end"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"}}, "quiet_hours.tz"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "../../etc/passwd"}}, "quiet_hours.tz"),
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "America"}},
            "quiet_hours.tz",
        ),  # a directory
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Etc"}}, "quiet_hours.tz"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "dnd": True}}, "quiet_hours.dnd"),
        ([], ""),
    ],
)
def test_bad_preferences_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(Unprocessable) as raised:
        parse_preferences(body)
    assert raised.value.field == field


def test_preferences_are_normalised() -> None:
    doc = parse_preferences({"muted_types": ["refund", "credit", "refund"], "min_amount": {"debit": "100"}})
    assert doc == {"muted_types": ["credit", "refund"], "min_amount": {"debit": "100"}, "quiet_hours": None}
    assert compile_preferences(doc, 0) == {
        "doc": '{"muted_types":["credit","refund"],"min_amount":{"debit":"100"},"quiet_hours":null}',
        "muted": ",credit,refund,",
        "min:debit": "10000",
    }
