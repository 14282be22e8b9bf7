"""`pushgw dlq list|replay [--event-id | --since] [--notices]`: operate on dead letters (JSON lines, masked).

`--notices`: the dead letters of the status notices to core banking instead of the WeChat deliveries."""

from __future__ import annotations

import argparse
import sys
from datetime import datetime

import orjson

from gateway.core.redis import connect
from gateway.core.scripts import Scripts
from gateway.core.settings import ConfigError, Settings
from workers.deadletter import list_dead, replay


def parse_since_ms(raw: str | None) -> int:
    """Unix seconds or an ISO-8601 time with zone, to unix ms. Raises ConfigError."""
    if raw is None:
        return 0
    try:
        if raw.replace(".", "", 1).isdigit():
            return int(float(raw) * 1000)
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"--since={raw!r}: use unix seconds or ISO-8601 with a time zone") from None
    if moment.tzinfo is None:
        raise ConfigError(f"--since={raw!r}: give a time zone offset")
    return int(moment.timestamp() * 1000)


async def run_dlq(settings: Settings, args: argparse.Namespace) -> None:
    redis = connect(settings)
    try:
        letters = await list_dead(
            redis,
            settings,
            since_ms=parse_since_ms(args.since),
            event_id=args.event_id,
            limit=args.limit,
            notices=getattr(args, "notices", False),
        )
        if args.action == "list":
            for letter in letters:
                sys.stdout.write(orjson.dumps(letter.row()).decode() + "\n")
            return
        replayed = await replay(redis, Scripts(settings), letters)
        sys.stdout.write(orjson.dumps({"replayed": replayed}).decode() + "\n")
    finally:
        await redis.aclose()
