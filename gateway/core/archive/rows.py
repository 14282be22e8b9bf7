"""The archive's row format: an archive stream entry (a snapshot of an event record) to a row, and a stored
row back to the record fields the live lookups read, so an archived answer has the live answer's shape.

The entry's fields are the record's (gateway/core/scripts/lib/archive.lua writes them): `src`, `eid`,
`accepted_ms`, `arch_v` and `status` are required; times are unix ms as text; the rest is optional. The
openid never reaches the record; its payload hash and recipient hash are left out of the entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

# the fields an erasure removes, as erase_records.lua removes them from the Redis record
PERSONAL = ("customer_id", "type", "amount", "currency", "account_tail", "occurred_at", "priority", "msgid")
_TIMES = {  # record field (unix ms) -> column
    "updated_ms": "updated_at",
    "delivered_ms": "delivered_at",
    "finished_ms": "finished_at",
    "notified_ms": "notified_at",
    "replayed_ms": "replayed_at",
    "erased_ms": "erased_at",
}
_TEXTS = ("status", "last_error", "finish_status", "notice", "notice_error", "held", "fallback")


class Row(NamedTuple):
    """One archived state, in the column order of `archive_events`."""

    source: str
    event_id: str
    accepted_at: datetime
    version: int
    status: str
    attempts: int
    last_error: str | None
    updated_at: datetime | None
    delivered_at: datetime | None
    finish_status: str | None
    finished_at: datetime | None
    notice: str | None
    notified_at: datetime | None
    notice_error: str | None
    notice_attempts: int | None
    held: str | None
    fallback: str | None
    replayed_at: datetime | None
    customer_id: str | None
    type: str | None
    amount: Decimal | None
    currency: str | None
    account_tail: str | None
    occurred_at: str | None
    priority: str | None
    msgid: str | None
    erased_at: datetime | None

    @property
    def key(self) -> tuple[str, str, datetime]:
        return self.source, self.event_id, self.accepted_at

    @property
    def month(self) -> tuple[int, int]:
        """(year, month) of acceptance, UTC: the partition it belongs to."""
        return self.accepted_at.year, self.accepted_at.month


COLUMNS = Row._fields


class InvalidEntry(ValueError):
    """An archive stream entry that is no event record snapshot (a required field missing or malformed)."""


def at_ms(ms: int) -> datetime:
    """A unix ms as an aware UTC datetime, exactly (PostgreSQL keeps microseconds)."""
    seconds, millis = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)


def ms_of(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _time(fields: dict[str, str], name: str) -> datetime | None:
    raw = fields.get(name)
    return at_ms(int(raw)) if raw and raw.isdigit() else None


def _int(fields: dict[str, str], name: str) -> int | None:
    raw = fields.get(name)
    return int(raw) if raw and raw.isdigit() else None


def _amount(raw: str | None) -> Decimal | None:
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def row_of(fields: dict[str, str]) -> Row:
    """The row of one archive stream entry. Raises InvalidEntry."""
    try:
        source, event_id, status = fields["src"], fields["eid"], fields["status"]
        accepted_ms, version = int(fields["accepted_ms"]), int(fields["arch_v"])
    except (KeyError, ValueError):
        raise InvalidEntry("not an event record snapshot") from None
    values: dict[str, Any] = {name: fields.get(name) or None for name in (*_TEXTS, *PERSONAL)}
    values["amount"] = _amount(fields.get("amount"))
    values.update({column: _time(fields, name) for name, column in _TIMES.items()})
    values.update(
        source=source,
        event_id=event_id,
        accepted_at=at_ms(accepted_ms),
        version=version,
        status=status,
        attempts=_int(fields, "attempts") or 0,
        notice_attempts=_int(fields, "notice_attempts"),
    )
    return Row(**values)


def record_of(row: dict[str, Any] | Any) -> dict[str, str]:
    """The Redis record fields of a stored row (an asyncpg Record or a dict): what the live lookups read."""
    record = {"accepted_ms": str(ms_of(row["accepted_at"])), "attempts": str(row["attempts"])}
    for name, column in _TIMES.items():
        if row[column] is not None:
            record[name] = str(ms_of(row[column]))
    for name in (*_TEXTS, *PERSONAL, "notice_attempts"):
        if row[name] is not None:
            record[name] = str(row[name])
    return record


def latest(rows: list[Row]) -> list[Row]:
    """One row per event, its highest version: a batch may hold several states of one event, and one
    INSERT .. ON CONFLICT may not touch a row twice."""
    best: dict[tuple[str, str, datetime], Row] = {}
    for row in rows:
        kept = best.get(row.key)
        if kept is None or kept.version < row.version:
            best[row.key] = row
    return list(best.values())
