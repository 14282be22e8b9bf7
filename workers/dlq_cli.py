"""`pushgw dlq list|replay [--event-id | --since] [--notices]`: operate on dead letters (JSON lines, masked).

`--notices`: the dead letters of the status notices to core banking instead of the WeChat deliveries.
A Redis without pushgw's data epoch is refused (exit 3): its empty answer would read as "no dead letters"."""

from __future__ import annotations

import argparse
import sys

import orjson

from gateway.core import clock
from gateway.core.operator import require_pushgw_data
from gateway.core.redis import connect
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.deadletter import list_dead, replay


async def run_dlq(settings: Settings, args: argparse.Namespace) -> None:
    """Print the dead letters (list) or replay them; raises NoPushgwData (exit 3) before reading a Redis
    that holds no pushgw data, and clock.BadInstant for a bad --since."""
    since_ms = clock.parse_instant_ms(args.since, "--since") if args.since else 0
    redis = connect(settings, epoch_guard=False)  # checked here instead, with an operator's message
    try:
        await require_pushgw_data(redis, settings)
        letters = await list_dead(
            redis,
            settings,
            since_ms=since_ms,
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
