"""Erasing a customer (DELETE /v1/customers/{id}, the right to deletion): what pushgw holds about them goes.

Steps, each idempotent, so an erasure cut short (Redis failed: 503) is finished by asking again:
1. the binding (a slot of its own): from now on no message can reach the customer;
2. for the customer's events (their timeline and their held list), in chunks: the msgid index of each
   delivered message (a slot per msgid), then `erase_records` in the customer's shard: the personal fields
   of the records go, what dedup and reconcile need stays, and an event still in flight ends `no_binding`
   with its fallback notice (core banking sends the SMS);
3. `erase_customer` in the customer's shard: preferences, held events, rate-limit log and timeline. Events
   accepted meanwhile keep the timeline from going: step 2 runs for them, then this again;
4. the copies of the customer's events in transit in their shard: scheduled retries, delivery stream entries
   (read or not) and dead letters, each removed once every event it carries is erased (or expired): the
   worker would only have acknowledged it. Notices owed to core banking stay (ids and status, no body);
5. with an archive (PUSHGW_ARCHIVE_URL), the customer's rows there lose their personal fields (the ones step 2
   removes from the records: id, type, amount, currency, account tail, occurred_at, priority, msgid), keeping
   source, event id, status and times for dispute and regulator counts; a tombstone (a hash of the id) keeps
   them out of the customer's rows still waiting in Redis for the archive (their archive stream entries stay:
   they are stored stripped). A failing archive is a 503: asking again finishes the erasure.
Every script and command touches one slot, so the erasure works on a Redis Cluster as on one Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, cast

import orjson

from gateway.archived import reading
from gateway.core import keys
from gateway.core.archive.store import ArchiveStore
from gateway.core.entries import EVENT_ID, SOURCE, items_of
from gateway.core.errors import ServiceUnavailable
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts

ROUNDS = 5  # step 2 and 3 again while events keep arriving for the customer; then 503
CHUNK_EVENTS = 256  # event records per erase_records call
PAGE = 500  # stream entries or set members read per round trip while looking for copies

Event = tuple[str, str]  # (source, event id)


@dataclass
class Erased:
    """What one erasure removed: counts only, never what they were."""

    binding: int = 0
    preferences: int = 0
    timeline_entries: int = 0
    held_events: int = 0
    event_records: int = 0
    queued_copies: int = 0  # retries, stream entries and dead letters carrying the customer's events
    archived_events: int | None = None  # archive rows stripped (None, and not shown: no archive)

    def counts(self) -> dict[str, int]:
        return {name: count for name, count in asdict(self).items() if count is not None}

    @property
    def anything(self) -> bool:
        return any(self.counts().values())


def customer_ref(customer_id: str) -> str:
    """How logs name an erased customer: a hash an auditor holding the id can recompute, not the id."""
    return hashlib.sha256(f"pushgw-customer:{customer_id}".encode()).hexdigest()[:16]


def _chunks(events: list[Event], size: int) -> Iterator[list[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def _carried(entry: dict[str, Any]) -> list[Event]:
    """(source, event id) of each event a stream entry (or its JSON copy) carries; [] if it is not one."""
    try:
        return [(str(item[SOURCE]), str(item[EVENT_ID])) for item in items_of(entry)]
    except (KeyError, TypeError, orjson.JSONDecodeError):
        return []


def _dead_entry(fields: dict[str, str]) -> dict[str, Any]:
    try:
        entry = orjson.loads(fields.get("entry", "{}"))
    except orjson.JSONDecodeError:
        return {}
    return entry if isinstance(entry, dict) else {}


class Eraser:
    """Erases customers from one Redis (or Redis Cluster) with `shards` shards. Raises RedisError or
    TimeoutError when Redis fails (what was done stays done; asking again finishes it) and
    ServiceUnavailable when events keep arriving for the customer faster than they are erased."""

    def __init__(
        self, redis: RedisClient, scripts: Scripts, shards: int, archive: ArchiveStore | None = None
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._shards = shards
        self._archive = archive

    async def erase(self, customer_id: str) -> Erased:
        shard = keys.shard_of(customer_id, self._shards)
        erased = Erased(binding=int(await self._redis.delete(keys.binding(customer_id))))
        for _ in range(ROUNDS):
            for chunk in _chunks(await self._events(shard, customer_id), CHUNK_EVENTS):
                await self._forget_msgids(shard, chunk)
                records, removed = await self._scripts.erase_records(self._redis, shard, customer_id, chunk)
                erased.event_records += records
                erased.timeline_entries += removed
            done = await self._scripts.erase_customer(self._redis, shard, customer_id)
            if done is not None:
                erased.preferences, erased.held_events = done
                break
        else:
            raise ServiceUnavailable(
                "events for this customer keep arriving, retry the erasure", retry_after_s=1
            )
        erased.queued_copies = await self._remove_copies(shard, customer_id)
        if self._archive is not None:  # last: the records it could still receive are stripped already
            with reading():
                erased.archived_events = await self._archive.erase(customer_id)
        return erased

    async def _events(self, shard: int, customer_id: str) -> list[Event]:
        """The customer's events on their timeline or held for a digest, each once."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrange(keys.customer_events(shard, customer_id), 0, -1)
            pipe.lrange(keys.digest_held(shard, customer_id), 0, -1)
            members, held = await pipe.execute()
        events: dict[Event, None] = {}
        for member in cast(list[str], members):
            source, _, event_id = member.partition(":")
            events[(source, event_id)] = None
        for item in cast(list[str], held):
            events.update(dict.fromkeys(_carried(orjson.loads(item))))
        return list(events)

    async def _forget_msgids(self, shard: int, events: list[Event]) -> None:
        """Delete the msgid index (customer id and records) of each delivered message among `events`."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for source, event_id in events:
                pipe.hget(keys.event(shard, source, event_id), "msgid")
            msgids = [msgid for msgid in await pipe.execute() if msgid]
        if msgids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for msgid in msgids:
                    pipe.delete(keys.msgid(msgid))
                await pipe.execute()

    async def _remove_copies(self, shard: int, customer_id: str) -> int:
        removed = 0
        pattern = f'*"cid":"{customer_id}"*'  # entry JSON is written with sorted keys and no spaces
        for retries in (keys.retries(shard, critical=True), keys.retries(shard)):
            async for member, _ in self._redis.zscan_iter(retries, match=pattern, count=PAGE):
                if await self._erased_copy(shard, customer_id, orjson.loads(member)):
                    removed += int(await self._redis.zrem(retries, member))
        for stream in (keys.stream(shard, critical=True), keys.stream(shard)):
            removed += await self._remove_entries(stream, shard, customer_id, dict)
        removed += await self._remove_entries(keys.dead_letters(shard), shard, customer_id, _dead_entry)
        return removed

    async def _remove_entries(
        self, stream: str, shard: int, customer_id: str, entry_of: Callable[[dict[str, str]], dict[str, Any]]
    ) -> int:
        """XDEL the entries of a stream that carry only erased events of the customer, read page by page."""
        removed, start = 0, "-"
        while True:
            page = cast(list[tuple[str, dict[str, str]]], await self._redis.xrange(stream, start, "+", PAGE))
            doomed = [
                entry_id
                for entry_id, fields in page
                if await self._erased_copy(shard, customer_id, entry_of(fields))
            ]
            if doomed:
                removed += int(await self._redis.xdel(stream, *doomed))
            if len(page) < PAGE:
                return removed
            start = "(" + page[-1][0]

    async def _erased_copy(self, shard: int, customer_id: str, entry: dict[str, Any]) -> bool:
        """Whether an entry is the customer's and every event record it carries is erased or gone (an event
        accepted after the erasure is left to be delivered, or to end no_binding)."""
        carried = _carried(entry) if entry.get("cid") == customer_id else []
        if not carried:
            return False
        async with self._redis.pipeline(transaction=False) as pipe:
            for source, event_id in carried:
                pipe.hmget(keys.event(shard, source, event_id), ["status", "erased_ms"])
            states = cast(list[list[str | None]], await pipe.execute())
        return all(status is None or erased_ms is not None for status, erased_ms in states)
