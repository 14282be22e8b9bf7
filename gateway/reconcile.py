"""`pushgw reconcile` and `pushgw epoch`: prove from Redis alone that nothing accepted went missing, and
show or reset the data epoch.

Reconcile reads every event record accepted in a window and proves
    accepted = delivered + failed + dead_lettered + no_binding + suppressed + in flight
where "in flight" (queued, retrying, digested) counts only events that are really held somewhere: an entry of
a delivery stream (read or not), a scheduled retry, or a customer's digest hold list. An in-flight record
held nowhere is an orphan (lost); one accepted longer ago than the retry horizon (PUSHGW_MAX_AGE_S plus a
grace) is stuck. Either makes the exit status 1. The output is one JSON object (ids only, never a body).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson

from gateway.core import clock, keys
from gateway.core.redis import RedisClient, connect, ensure_groups, read_epoch, write_epoch
from gateway.core.settings import Settings

log = logging.getLogger(__name__)
FINAL = ("delivered", "failed", "dead_lettered", "no_binding", "suppressed")
IN_FLIGHT = ("queued", "retrying", "digested")
STUCK_GRACE_S = 600  # past max age the worker dead-letters on the next attempt; allow for the backoff cap
SCAN_COUNT = 1000
MOST_LISTED = 100


@dataclass
class Reconciliation:
    since_ms: int
    until_ms: int
    accepted: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    orphaned: list[str] = field(default_factory=list)  # "source:event_id"
    stuck: list[str] = field(default_factory=list)

    @property
    def adds_up(self) -> bool:
        final = sum(self.by_status.get(status, 0) for status in FINAL)
        return self.accepted == final + self.in_flight and not self.orphaned and not self.stuck

    def report(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["orphaned"], shown["stuck"] = self.orphaned[:MOST_LISTED], self.stuck[:MOST_LISTED]
        shown.update(orphaned_count=len(self.orphaned), stuck_count=len(self.stuck), adds_up=self.adds_up)
        return shown


def _entry_ids(fields: dict[str, str]) -> list[str]:
    """ "source:event_id" of each event a stream entry (or its JSON copy) carries."""
    if fields.get("kind") == "digest":
        items = orjson.loads(fields.get("items", "[]"))
        return [f"{item['src']}:{item['eid']}" for item in items]
    if "eid" in fields:
        return [f"{fields.get('src', '')}:{fields['eid']}"]
    return []


async def _scan(redis: RedisClient, pattern: str) -> AsyncIterator[str]:
    async for key in redis.scan_iter(match=pattern, count=SCAN_COUNT):
        yield str(key)


async def _held(redis: RedisClient, shard: int) -> set[str]:
    """Every event a shard holds for later: stream entries, scheduled retries, digest hold lists."""
    held: set[str] = set()
    for stream, group in keys.consumer_groups(shard):
        if group != keys.GROUP:
            continue
        entries = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream, "-", "+"))
        for _, fields in entries:
            held.update(_entry_ids(fields))
    for retry in {keys.retries(shard), keys.retries(shard, critical=True)}:
        for member in cast(list[str], await redis.zrange(retry, 0, -1)):
            held.update(_entry_ids(orjson.loads(member)))
    async for key in _scan(redis, keys.digest_held(shard, "*")):
        for item in cast(list[str], await redis.lrange(key, 0, -1)):
            parsed = orjson.loads(item)
            held.add(f"{parsed['src']}:{parsed['eid']}")
    return held


async def _records(redis: RedisClient, shard: int) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """("source:event_id", record) of every event record of a shard."""
    prefix = keys.event(shard, "", "")[:-1]  # ".../event::" less the last separator: ".../event:"
    async for key in _scan(redis, prefix + "*"):
        record = cast(dict[str, str], await redis.hgetall(key))
        if record:
            yield key[len(prefix) :], record


async def reconcile(redis: RedisClient, settings: Settings, since_ms: int, until_ms: int) -> Reconciliation:
    """Read-only; safe while gateways and workers run (an event moving meanwhile may show as in flight)."""
    result = Reconciliation(since_ms, until_ms)
    statuses: Counter[str] = Counter()
    horizon_ms = clock.now_ms() - (settings.max_age_s + STUCK_GRACE_S) * 1000
    for shard in range(settings.shards):
        in_flight: list[tuple[str, int]] = []
        async for name, record in _records(redis, shard):
            accepted_ms = int(record.get("accepted_ms", 0))
            if not since_ms <= accepted_ms < until_ms:
                continue
            status = record.get("status", "")
            statuses[status] += 1
            if status in IN_FLIGHT:  # its age counts from acceptance, or from its last replay
                in_flight.append((name, max(accepted_ms, int(record.get("replayed_ms", 0)))))
        if in_flight:
            held = await _held(redis, shard)
            for name, age_from_ms in in_flight:
                if name not in held:
                    result.orphaned.append(name)
                elif age_from_ms < horizon_ms:
                    result.stuck.append(name)
                else:
                    result.in_flight += 1
    result.accepted = sum(statuses.values())
    result.by_status = dict(sorted(statuses.items()))
    return result


def _time_ms(raw: str) -> int:
    try:
        return int(float(raw) * 1000)
    except ValueError:
        return int(datetime.fromisoformat(raw).timestamp() * 1000)


async def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Print the reconciliation as JSON; returns the exit status (0 only when it adds up)."""
    now_ms = clock.now_ms()
    since_ms = _time_ms(args.since) if args.since else now_ms - 24 * 3600 * 1000
    until_ms = _time_ms(args.until) if args.until else now_ms + 1
    redis = connect(settings)
    try:
        result = await reconcile(redis, settings, since_ms, until_ms)
    finally:
        await redis.aclose()
    sys.stdout.write(orjson.dumps(result.report()).decode() + "\n")
    return 0 if result.adds_up else 1


async def run_epoch(settings: Settings, args: argparse.Namespace) -> int:
    """`show`: print the epoch. `reset --yes`: an operator acknowledges that Redis's data is gone for good
    (a real fresh start): write a new epoch that running processes follow, and create the consumer groups."""
    redis = connect(settings)
    try:
        if args.action == "reset":
            if not args.yes:
                sys.stderr.write("pushgw epoch reset: add --yes to acknowledge that queued events are lost\n")
                return 2
            epoch = await write_epoch(redis, "operator", replace=True)
            await ensure_groups(redis, settings.shards)
            log.warning("data epoch reset by an operator: a fresh start was acknowledged")
        else:
            found = await read_epoch(redis)
            if found is None:
                sys.stdout.write('{"epoch": null}\n')
                return 1
            epoch = found
    finally:
        await redis.aclose()
    sys.stdout.write(orjson.dumps({"epoch": asdict(epoch)}).decode() + "\n")
    return 0
