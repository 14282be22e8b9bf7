"""The dead-letter streams: list what will not be delivered (masked), and replay it onto the stream.

Two kinds share this: WeChat deliveries (`keys.dead_letters`, replayed onto the delivery stream with the
event records reset to queued) and status notices to core banking (`keys.notice_dead_letters`, replayed onto
the notice stream; the event's status stays, only its `notice` field goes back to queued)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson

from gateway.core import keys
from gateway.core.entries import (
    ATTEMPTS,
    CRITICAL,
    CUSTOMER_ID,
    DIGEST_ID,
    EVENT,
    EVENT_ID,
    PRIORITY,
    SOURCE,
    items_of,
)
from gateway.core.masking import mask_account
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings


@dataclass(frozen=True)
class DeadLetter:
    shard: int
    dead_id: str
    message_id: str  # the event id, or the digest id
    customer_id: str
    reason: str
    attempts: int
    at_ms: int
    records: list[str]
    critical: bool
    notice_type: str | None = None  # set for a status notice to core banking, None for a delivery
    accounts: tuple[str, ...] = ()  # masked (****1234), one per event carried (a digest carries several)

    def row(self) -> dict[str, Any]:
        """What an operator may see: ids, the masked account, reason and times; never the event body."""
        shown = sorted(set(self.accounts))
        return {
            "dead_id": f"{self.shard}:{self.dead_id}",
            "event_id": self.message_id,
            "customer_id": self.customer_id,
            **({"account": shown[0]} if len(shown) == 1 else {"accounts": shown} if shown else {}),
            "reason": self.reason,
            "attempts": self.attempts,
            "dead_at": datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="seconds"),
            **({"notice_type": self.notice_type} if self.notice_type is not None else {}),
        }


def _parse(shard: int, dead_id: str, fields: dict[str, str]) -> DeadLetter:
    entry = orjson.loads(fields["entry"])
    items = items_of(entry)
    return DeadLetter(
        shard=shard,
        dead_id=dead_id,
        message_id=entry.get(DIGEST_ID) or entry[EVENT_ID],
        customer_id=entry[CUSTOMER_ID],
        reason=fields.get("reason", ""),
        attempts=int(entry.get(ATTEMPTS, 0)),
        at_ms=int(fields.get("at", 0)),
        records=[keys.event(shard, item[SOURCE], item[EVENT_ID]) for item in items],
        critical=entry.get(PRIORITY) == CRITICAL,
        accounts=tuple(_masked_account(item) for item in items if item.get(EVENT)),
    )


def _masked_account(item: dict[str, str]) -> str:
    """The masked account of the event an entry item carries (its `ev`, the event as accepted)."""
    account = orjson.loads(item[EVENT]).get("account")
    return mask_account(account) if isinstance(account, str) and account else "****"


def _parse_notice(shard: int, dead_id: str, fields: dict[str, str]) -> DeadLetter:
    entry = orjson.loads(fields["entry"])
    return DeadLetter(
        shard=shard,
        dead_id=dead_id,
        message_id=entry[EVENT_ID],
        customer_id=entry.get(CUSTOMER_ID, ""),
        reason=fields.get("reason", ""),
        attempts=int(entry.get(ATTEMPTS, 0)),
        at_ms=int(fields.get("at", 0)),
        records=[keys.event(shard, entry[SOURCE], entry[EVENT_ID])],
        critical=False,
        notice_type=entry.get("type", ""),
    )


async def list_dead(
    redis: RedisClient,
    settings: Settings,
    *,
    since_ms: int = 0,
    event_id: str | None = None,
    limit: int = 1000,
    notices: bool = False,
) -> list[DeadLetter]:
    """Dead letters of every shard, oldest first, dead since `since_ms`, optionally of one event; those of
    the status notices to core banking when `notices`, else of the WeChat deliveries."""
    dead_key, parse = (keys.notice_dead_letters, _parse_notice) if notices else (keys.dead_letters, _parse)
    found: list[DeadLetter] = []
    for shard in range(settings.shards):
        start = f"{since_ms}-0" if since_ms else "-"
        entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(dead_key(shard), start, "+"))
        for dead_id, fields in entries:
            letter = parse(shard, dead_id, fields)
            if event_id is None or letter.message_id == event_id:
                found.append(letter)
    found.sort(key=lambda letter: letter.at_ms)
    return found[:limit]


async def replay(redis: RedisClient, scripts: Scripts, letters: list[DeadLetter]) -> int:
    """Put each dead letter back on its stream with attempts reset. Returns how many were replayed."""
    replayed = 0
    for letter in letters:
        if letter.notice_type is not None:
            replayed += await _replay_notice(redis, scripts, letter)
            continue
        dead, stream = keys.dead_letters(letter.shard), keys.stream(letter.shard, letter.critical)
        if await scripts.replay_dead(redis, dead, stream, letter.dead_id, letter.records):
            replayed += 1
    return replayed


async def _replay_notice(redis: RedisClient, scripts: Scripts, letter: DeadLetter) -> int:
    """Put a notice dead letter back on its notice stream. The record's `notice` is set to queued first
    (only while the record exists), so the worker's outcome is the one that stays; the event's own status
    is not touched (the script is given no records)."""
    for record in letter.records:
        if await redis.exists(record):
            await redis.hset(record, "notice", "queued")
    dead, stream = keys.notice_dead_letters(letter.shard), keys.notices(letter.shard)
    return 1 if await scripts.replay_dead(redis, dead, stream, letter.dead_id, []) else 0
