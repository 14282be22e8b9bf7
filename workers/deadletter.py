"""The dead-letter streams: list what will not be delivered (masked), and replay it onto the stream."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from gateway.core import keys
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

    def row(self) -> dict[str, Any]:
        """What an operator may see: ids, reason and times; never the event body or account."""
        return {
            "dead_id": f"{self.shard}:{self.dead_id}",
            "event_id": self.message_id,
            "customer_id": self.customer_id,
            "reason": self.reason,
            "attempts": self.attempts,
            "dead_at": datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="seconds"),
        }


def _parse(shard: int, dead_id: str, fields: dict[str, str]) -> DeadLetter:
    entry = orjson.loads(fields["entry"])
    items = orjson.loads(entry["items"]) if entry.get("kind") == "digest" else [entry]
    return DeadLetter(
        shard=shard,
        dead_id=dead_id,
        message_id=entry.get("did") or entry["eid"],
        customer_id=entry["cid"],
        reason=fields.get("reason", ""),
        attempts=int(entry.get("att", 0)),
        at_ms=int(fields.get("at", 0)),
        records=[keys.event(shard, item["src"], item["eid"]) for item in items],
    )


async def list_dead(
    redis: Redis, settings: Settings, *, since_ms: int = 0, event_id: str | None = None, limit: int = 1000
) -> list[DeadLetter]:
    """Dead letters of every shard, oldest first, dead since `since_ms`, optionally of one event."""
    found: list[DeadLetter] = []
    for shard in range(settings.shards):
        start = f"{since_ms}-0" if since_ms else "-"
        entries = cast(
            list[tuple[str, dict[str, str]]], await redis.xrange(keys.dead_letters(shard), start, "+")
        )
        for dead_id, fields in entries:
            letter = _parse(shard, dead_id, fields)
            if event_id is None or letter.message_id == event_id:
                found.append(letter)
    found.sort(key=lambda letter: letter.at_ms)
    return found[:limit]


async def replay(redis: Redis, scripts: Scripts, letters: list[DeadLetter]) -> int:
    """Put each dead letter back on its stream with attempts reset. Returns how many were replayed."""
    replayed = 0
    for letter in letters:
        if await scripts.replay_dead(redis, letter.shard, letter.dead_id, letter.records):
            replayed += 1
    return replayed
