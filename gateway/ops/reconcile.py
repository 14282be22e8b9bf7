"""`pushgw reconcile`: prove that what Redis holds adds up, and check it against what lies outside Redis, so
that data missing underneath (an emptied or replaced Redis) is said, not read as "nothing to account for".

Reconcile reads every event record accepted in a window and proves
    accepted = delivered + failed + dead_lettered + no_binding + suppressed + in flight
where "in flight" (queued, retrying, digested) counts only events that are really held somewhere: an entry of
a delivery stream (read or not), a scheduled retry, or a customer's digest hold list. An in-flight record
held nowhere is an orphan (lost); one accepted longer ago than the retry horizon (PUSHGW_MAX_AGE_S plus a
grace) is stuck. Either makes the exit status 1.

Records cannot show what is gone with them, so it also checks (exit status 3, "data_missing"):
- the data epoch: missing (Redis lost its data, or was never initialised), or not the one PUSHGW_REDIS_EPOCH
  (or `--redis-epoch`) names, or not the one of the previous report (`--previous FILE`);
- each shard's delivery streams: XINFO STREAM entries-added (a counter trimming never lowers, which restarts
  only when the stream is created again) must be at least the number of event records that were queued onto
  them, and at least what the previous report saw.
With an archive (PUSHGW_ARCHIVE_URL) every final record of the window must also be archived at its version,
or wait for it on its shard's archive stream (`archive` in the report; a missing one makes the exit status 1).
The output is one JSON object (ids only, never a body).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
from redis.exceptions import ResponseError

from gateway.core import clock, keys
from gateway.core.entries import DIGEST, EVENT_ID, ITEMS, KIND, SOURCE, items_of
from gateway.core.redis import RedisClient, connect, read_epoch
from gateway.core.settings import Settings
from gateway.ops.archive_reconcile import Final, reconcile_archive

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
    epoch: str | None = None  # the data epoch Redis holds
    expected_epoch: str | None = None  # PUSHGW_REDIS_EPOCH
    streams: dict[str, int | None] = field(default_factory=dict)  # delivery stream -> entries-added
    queued_records: dict[str, int] = field(default_factory=dict)  # shard -> records queued onto its streams
    data_missing: list[str] = field(default_factory=list)  # why Redis is known to miss data
    archive: dict[str, Any] | None = None  # with an archive: its part (gateway/ops/archive_reconcile.py)

    @property
    def adds_up(self) -> bool:
        final = sum(self.by_status.get(status, 0) for status in FINAL)
        archived = self.archive is None or bool(self.archive["adds_up"])
        return self.accepted == final + self.in_flight and not self.orphaned and not self.stuck and archived

    @property
    def exit_status(self) -> int:
        """3: data is missing underneath the records; 1: the records do not add up; 0: neither."""
        if self.data_missing:
            return 3
        return 0 if self.adds_up else 1

    def report(self) -> dict[str, Any]:
        shown = asdict(self)
        shown["orphaned"], shown["stuck"] = self.orphaned[:MOST_LISTED], self.stuck[:MOST_LISTED]
        shown.update(orphaned_count=len(self.orphaned), stuck_count=len(self.stuck), adds_up=self.adds_up)
        return shown


def _entry_ids(fields: dict[str, str]) -> list[str]:
    """ "source:event_id" of each event a stream entry (or its JSON copy) carries."""
    if fields.get(KIND) == DIGEST:
        if ITEMS not in fields:  # a digest without items carries nothing
            return []
        return [f"{item[SOURCE]}:{item[EVENT_ID]}" for item in items_of(fields)]
    if EVENT_ID in fields:
        return [f"{fields.get(SOURCE, '')}:{fields[EVENT_ID]}"]
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


def _queued_onto_a_stream(record: dict[str, str]) -> bool:
    """Whether the ingest script put the event on a delivery stream: neither held for a digest nor
    suppressed (the two outcomes that skip the stream)."""
    return "held" not in record and record.get("status") != "suppressed"


async def _shard(
    redis: RedisClient,
    result: Reconciliation,
    shard: int,
    statuses: Counter[str],
    horizon_ms: int,
    finals: list[Final] | None = None,
) -> int:
    """Count one shard's records of the window into `statuses` and `result` (and its final ones into
    `finals`); returns how many of all its records (any time) were queued onto its delivery streams."""
    in_flight: list[tuple[str, int]] = []
    queued = 0
    async for name, record in _records(redis, shard):
        queued += _queued_onto_a_stream(record)
        accepted_ms = int(record.get("accepted_ms", 0))
        if not result.since_ms <= accepted_ms < result.until_ms:
            continue
        status = record.get("status", "")
        statuses[status] += 1
        if finals is not None and status in FINAL:
            finals.append((shard, name, record))
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
    return queued


async def _entries_added(redis: RedisClient, stream: str) -> int | None:
    """XINFO STREAM entries-added (0 for a stream that does not exist; None before Redis 7: no counter)."""
    try:
        info = await redis.xinfo_stream(stream)
    except ResponseError as exc:
        if "no such key" in str(exc).lower():
            return 0
        raise
    added = info.get("entries-added")
    return None if added is None else int(added)


async def _check_streams(redis: RedisClient, result: Reconciliation, shard: int, queued: int) -> None:
    """Read after the shard's records, so that an event accepted meanwhile cannot make a false alarm."""
    added: int | None = 0
    for critical in (True, False):
        stream = keys.stream(shard, critical=critical)
        count = result.streams[stream] = await _entries_added(redis, stream)
        added = None if count is None or added is None else added + count
    result.queued_records[str(shard)] = queued
    if added is not None and added < queued:
        result.data_missing.append(
            f"shard {shard}: its delivery streams had {added} entries added, fewer than the {queued} events"
            " recorded as queued onto them: the streams were created again, and what they held is missing"
        )


def _check_epoch(result: Reconciliation, previous: dict[str, Any]) -> None:
    found, expected, before = result.epoch, result.expected_epoch, previous.get("epoch")
    if found is None:
        result.data_missing.append(
            "redis holds no data epoch: it lost its data (restarted empty, flushed) or was never initialised;"
            " its records cannot show what it held before"
        )
    elif expected and found != expected:
        result.data_missing.append(f"redis holds data epoch {found}, PUSHGW_REDIS_EPOCH names {expected}")
    if found is not None and isinstance(before, str) and found != before:
        result.data_missing.append(f"the data epoch changed since the previous report ({before} -> {found})")


def _check_previous(result: Reconciliation, previous: dict[str, Any]) -> None:
    """Counters never go back: one lower than the previous report's is a stream created again, or an older
    copy of the data restored."""
    for stream, before in (previous.get("streams") or {}).items():
        now = result.streams.get(stream)
        if isinstance(before, int) and now is not None and now < before:
            result.data_missing.append(
                f"{stream}: entries-added went back from {before} to {now} since the previous report"
            )


async def reconcile(
    redis: RedisClient,
    settings: Settings,
    since_ms: int,
    until_ms: int,
    previous: dict[str, Any] | None = None,
) -> Reconciliation:
    """Read-only; safe while gateways and workers run (an event moving meanwhile may show as in flight).
    `previous`: an earlier report of this command (its epoch and stream counters)."""
    result = Reconciliation(since_ms, until_ms, expected_epoch=settings.redis_epoch or None)
    epoch = await read_epoch(redis)
    result.epoch = epoch.epoch_id if epoch is not None else None
    _check_epoch(result, previous or {})
    statuses: Counter[str] = Counter()
    horizon_ms = clock.now_ms() - (settings.max_age_s + STUCK_GRACE_S) * 1000
    finals: list[Final] | None = [] if settings.archive_url else None  # for the archive's part
    for shard in range(settings.shards):
        queued = await _shard(redis, result, shard, statuses, horizon_ms, finals)
        await _check_streams(redis, result, shard, queued)
    if finals is not None:
        result.archive = (await reconcile_archive(redis, settings, finals)).report()
    _check_previous(result, previous or {})
    result.accepted = sum(statuses.values())
    result.by_status = dict(sorted(statuses.items()))
    return result


def _previous(path: str | None) -> dict[str, Any]:
    """An earlier report (`--previous FILE`, this command's output kept outside Redis); {} without one."""
    if path is None:
        return {}
    loaded = orjson.loads(Path(path).read_bytes())
    return loaded if isinstance(loaded, dict) else {}


async def run_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Print the reconciliation as JSON; returns the exit status (see Reconciliation.exit_status)."""
    now_ms = clock.now_ms()
    since_ms = clock.parse_instant_ms(args.since, "--since") if args.since else now_ms - 24 * 3600 * 1000
    until_ms = clock.parse_instant_ms(args.until, "--until") if args.until else now_ms + 1
    previous = _previous(args.previous)
    redis = connect(settings, epoch_guard=False)  # it reports on an epoch-less Redis instead of refusing it
    try:
        result = await reconcile(redis, settings, since_ms, until_ms, previous)
    finally:
        await redis.aclose()
    sys.stdout.write(orjson.dumps(result.report()).decode() + "\n")
    return result.exit_status
