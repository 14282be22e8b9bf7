"""Typed wrappers of the Lua scripts in scripts/*.lua, loaded once (EVALSHA with NOSCRIPT fallback)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline
from redis.exceptions import NoScriptError

from gateway.core import keys
from gateway.core.event import Event, amount_cents, payload_hash
from gateway.core.redis import AnyPipeline, RedisClient
from gateway.core.settings import Settings

Client = RedisClient | AnyPipeline


def _read_lua() -> dict[str, str]:
    """The text of every packaged script by its path under scripts/ (`ingest.lua`, `lib/quiet.lua`)."""
    root = resources.files("gateway.core").joinpath("scripts")
    return {
        prefix + item.name: item.read_text(encoding="utf-8")
        for folder, prefix in ((root, ""), (root.joinpath("lib"), "lib/"))
        for item in folder.iterdir()
        if item.name.endswith(".lua")
    }


# read once, at import: Scripts are built inside a running event loop, where a file read would block it
_LUA = _read_lua()


class _Script:
    """One Lua script by its SHA. On a pipeline it is queued as a bare EVALSHA (redis-py's own script
    objects would add a SCRIPT EXISTS round trip to every pipeline); the caller handles NOSCRIPT there."""

    def __init__(self, name: str, *libs: str) -> None:
        self.source = "".join([*(_LUA[f"lib/{lib}.lua"] for lib in libs), _LUA[f"{name}.lua"]])
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1

    async def __call__(self, client: Client, keys: list[str], args: list[Any]) -> Any:
        if isinstance(client, Pipeline | ClusterPipeline):
            # what pipe.evalsha sends; a cluster pipeline blocks that method but routes this by the keys' slot
            return client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)


RATE_ENTRY_LEN = 14  # lib/rate_log.lua's entry: 13 digits of unix ms and a comma


def rate_log_times(value: str | bytes | None) -> list[int]:
    """The admission times (unix ms, oldest first) in a rate log's value (keys.rate_log; None: no key)."""
    text = value.decode() if isinstance(value, bytes) else value or ""
    return [int(text[at : at + RATE_ENTRY_LEN - 1]) for at in range(0, len(text), RATE_ENTRY_LEN)]


def rate_log_value(times_ms: list[int]) -> str:
    """A rate log's value holding these admission times (unix ms, oldest first): what the scripts write."""
    return "".join(f"{at_ms:013d}," for at_ms in times_ms)


@dataclass(frozen=True)
class IngestArgs:
    """One event to ingest: the caller has validated it and computed its canonical form and hash."""

    source: str
    event_id: str
    customer_id: str
    canonical: bytes
    payload_hash: str
    event_type: str
    amount_cents: str  # digits without leading zeros: the script compares it with minimum amounts exactly
    critical: bool
    summary: tuple[tuple[str, str], ...]  # masked fields kept on the record for the customer timeline

    @classmethod
    def of(cls, source: str, event: Event, *, critical: bool) -> IngestArgs:
        """The arguments of a validated event sent by `source` (its canonical form, hash, masked summary)."""
        canonical = event.canonical_json()
        summary = (
            ("type", event.type.value),
            ("amount", event.amount),
            ("currency", event.currency),
            ("account_tail", event.account[-4:]),
            ("occurred_at", event.occurred_at),
            ("priority", "critical" if critical else "normal"),
            ("fallback", event.fallback or ""),
        )
        return cls(
            source,
            event.event_id,
            event.customer_id,
            canonical,
            payload_hash(canonical),
            event.type.value,
            amount_cents(event.amount),
            critical,
            summary,
        )


@dataclass(frozen=True)
class EntryOutcome:
    """A delivery outcome of one stream entry, what the finish script records (`Scripts.finish`)."""

    shard: int
    critical: bool
    entry_id: str
    records: list[str]
    status: str
    attempts: int
    last_error: str = ""
    msgid: str = ""
    retry_due_ms: int = 0
    entry_json: bytes = b""
    to_hash: str = ""


class Scripts:
    """The registered scripts of one Redis client. Each method is one script call (or one pipeline slot)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._callback_sources = f",{','.join(settings.callback_urls)},"
        self._archive = "1" if settings.archive_url else ""  # final states go to keys.archive too
        self._ingest = _Script("ingest", "quiet", "rate_log", "archive")
        self._finish = _Script("finish", "archive")
        self._move_retries = _Script("move_retries")
        self._flush_digest = _Script("flush_digest", "quiet", "rate_log")
        self._token_invalidate = _Script("token_invalidate")
        self._delete_if = _Script("delete_if")
        self._replace_hash = _Script("replace_hash")
        self._save_preferences = _Script("save_preferences")
        self._mark_binding = _Script("mark_binding")
        self._replay_dead = _Script("replay_dead")
        self._finish_event = _Script("finish_event", "archive")
        self._notice_finish = _Script("notice_finish", "archive")
        self._throttle = _Script("throttle")
        self._erase_records = _Script("erase_records", "archive")
        self._erase_customer = _Script("erase_customer")

    async def load(self, redis: RedisClient) -> None:
        """Load every script (after a Redis restart, pipelines answer NOSCRIPT until this runs); on a
        cluster SCRIPT LOAD goes to every primary (a promoted replica starts without them)."""
        for script in (
            self._ingest,
            self._finish,
            self._move_retries,
            self._flush_digest,
            self._token_invalidate,
            self._delete_if,
            self._replace_hash,
            self._mark_binding,
            self._save_preferences,
            self._replay_dead,
            self._finish_event,
            self._notice_finish,
            self._throttle,
            self._erase_records,
            self._erase_customer,
        ):
            await redis.script_load(script.source)

    async def ingest(self, client: Client, event: IngestArgs) -> Any:
        """Ingest one event. On a Redis client returns [status, detail]; on a pipeline queues the call."""
        return await self._ingest(client, *self.ingest_call([event]))

    async def ingest_many(self, client: Client, events: Sequence[IngestArgs]) -> Any:
        """Ingest events in one script call, in order, each as if sent alone. On a Redis client returns
        [status, detail] flat for each event in turn; on a pipeline queues the call. On a Redis Cluster the
        events must be of one shard (keys.shard_of their customer): a call's keys are in one slot."""
        return await self._ingest(client, *self.ingest_call(events))

    def ingest_call(self, events: Sequence[IngestArgs]) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the ingest script for these events (what `ingest` sends; the bench sends
        them to other versions of the script)."""
        s = self._settings
        call_keys: list[str] = []
        call_args: list[Any] = [9 if self._archive else 8, s.event_ttl_s, s.rate_limit.count]
        call_args += (s.rate_limit.window_s * 1000, s.rate_policy)
        for event in events:
            shard, customer = keys.shard_of(event.customer_id, s.shards), event.customer_id
            call_keys += (
                keys.event(shard, event.source, event.event_id),
                keys.rate_log(shard, customer),
                keys.stream(shard),
                keys.digest_held(shard, customer),
                keys.digest_due(shard),
                keys.preferences(shard, customer),
                keys.stream(shard, critical=True),
                keys.customer_events(shard, customer),
            )
            if self._archive:
                call_keys.append(keys.archive(shard))
            call_args += (
                8 + 2 * len(event.summary),
                event.source,
                event.event_id,
                customer,
                event.canonical,
                event.payload_hash,
                "1" if event.critical else "0",
                event.event_type,
                event.amount_cents,
            )
            for field, value in event.summary:
                call_args += (field, value)
        return call_keys, call_args

    async def finish(self, client: Client, **outcome: Any) -> Any:
        """Record an outcome on every record of the entry and XACK it, atomically; schedules the retry or
        writes the dead letter as the status says. A msgid is kept with `to_hash` (its recipient's
        `recipient_hash`), which WeChat's finish event must match. `outcome`: the fields of `EntryOutcome`.
        On a Redis client returns how many records changed; on a pipeline queues the call."""
        answer = await self._finish(client, *self.finish_call([EntryOutcome(**outcome)]))
        return answer[0] if isinstance(answer, list) else answer

    async def finish_many(self, client: Client, outcomes: Sequence[EntryOutcome]) -> Any:
        """`finish` for several entries in one script call, in order. On a Redis client returns how many
        records changed for each entry; on a pipeline queues the call. On a Redis Cluster the entries must
        be of one shard (a call's keys are in one slot)."""
        return await self._finish(client, *self.finish_call(outcomes))

    def finish_call(self, outcomes: Sequence[EntryOutcome]) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of the finish script for these outcomes."""
        call_keys: list[str] = []
        call_args: list[Any] = [keys.GROUP, self._settings.event_ttl_s, self._callback_sources, self._archive]
        for o in outcomes:
            shard = o.shard
            call_keys += (
                keys.stream(shard, o.critical),
                keys.retries(shard, o.critical),
                keys.dead_letters(shard),
                keys.notices(shard),
                keys.archive(shard),
                *o.records,
            )
            call_args += (
                len(o.records),
                o.entry_id,
                o.status,
                o.attempts,
                o.last_error,
                o.msgid,
                o.retry_due_ms,
                o.entry_json,
                o.to_hash,
            )
        return call_keys, call_args

    async def move_retries(self, client: Client, retries: str, stream: str, most: int) -> int:
        """Move due entries of a retry set back onto its stream. Returns how many moved."""
        return int(await self._move_retries(client, [retries, stream], [most]))

    async def flush_digest(self, client: Client, shard: int, customer_id: str, most: int) -> int:
        """Queue a customer's held events as one digest if their window reopened. Returns events digested."""
        limit = self._settings.rate_limit
        return int(
            await self._flush_digest(
                client,
                [
                    keys.digest_due(shard),
                    keys.digest_held(shard, customer_id),
                    keys.rate_log(shard, customer_id),
                    keys.stream(shard),
                    keys.preferences(shard, customer_id),
                ],
                [customer_id, limit.count, limit.window_s * 1000, most],
            )
        )

    async def throttle(self, client: Client, appid: str, per_second: int, wanted: int) -> tuple[int, int]:
        """Take up to `wanted` send permits of the appid's current second. Returns (granted, ms left)."""
        granted, left_ms = await self._throttle(client, [keys.send_rate(appid)], [per_second, wanted])
        return int(granted), int(left_ms)

    async def token_invalidate(self, client: Client, appid: str, failed_token: str) -> bool:
        return bool(await self._token_invalidate(client, [keys.token(appid)], [failed_token]))

    async def delete_if(self, client: Client, key: str, value: str) -> bool:
        return bool(await self._delete_if(client, [key], [value]))

    async def replace_hash(self, client: Client, key: str, fields: Mapping[str, str]) -> None:
        """Replace the hash at `key` by `fields` (at least one) atomically: no reader sees it half-written."""
        if not fields:
            raise ValueError("replace_hash needs at least one field")
        await self._replace_hash(client, [key], [item for pair in fields.items() for item in pair])

    async def save_preferences(
        self, client: Client, shard: int, customer_id: str, fields: Mapping[str, str], now_ms: int
    ) -> None:
        """Replace the customer's compiled preferences (at least one field) and move their held events' due
        time to `now_ms`, in one atomic step: a crash cannot leave new quiet hours with events held for the
        old ones."""
        if not fields:
            raise ValueError("save_preferences needs at least one field")
        await self._save_preferences(
            client,
            [keys.preferences(shard, customer_id), keys.digest_due(shard)],
            [customer_id, now_ms, *(item for pair in fields.items() for item in pair)],
        )

    async def mark_binding(self, client: Client, customer_id: str, openid: str, status: str) -> bool:
        """Set the binding's status if it still names `openid` (one atomic step). Returns whether it did."""
        return bool(await self._mark_binding(client, [keys.binding(customer_id)], [openid, status]))

    async def replay_dead(
        self, client: Client, dead: str, stream: str, dead_id: str, records: list[str]
    ) -> str | None:
        """Move one dead letter back to its stream (attempts reset). Returns the new entry id or None."""
        new_id = await self._replay_dead(client, [dead, stream, *records], [dead_id])
        return None if new_id is None else _text(new_id)

    async def finish_event(
        self,
        client: Client,
        shard: int,
        records: list[str],
        finish_status: str,
        at_ms: int,
        *,
        msgid: str,
        to_hash: str,
    ) -> tuple[int, int]:
        """Record WeChat's finish status on the existing records of one shard that name `msgid` and were
        sent to the user of `to_hash` (`recipient_hash`), and queue the notice of a user block, atomically.
        Returns (records that matched, records changed): no match means the receipt is not ours to apply."""
        matched, updated = await self._finish_event(
            client,
            [keys.notices(shard), keys.archive(shard), *records],
            [finish_status, at_ms, self._callback_sources, msgid, to_hash, self._archive],
        )
        return int(matched), int(updated)

    async def notice_finish(
        self,
        client: Client,
        *,
        shard: int,
        entry_id: str,
        record: str,
        outcome: str,
        attempts: int,
        reason: str = "",
        retry_due_ms: int = 0,
        entry_json: bytes = b"",
    ) -> bool:
        """Record a notice POST's outcome ("sent", "retry", "failed", "dead_lettered") on the event record and
        XACK the notice entry, atomically; schedules the retry or writes the notice dead letter as the
        outcome says. Returns False (and changes nothing) if the entry was already acknowledged."""
        return bool(
            await self._notice_finish(
                client,
                [
                    keys.notices(shard),
                    keys.notice_retries(shard),
                    keys.notice_dead_letters(shard),
                    record,
                    keys.archive(shard),
                ],
                [
                    keys.NOTICE_GROUP,
                    entry_id,
                    outcome,
                    reason,
                    attempts,
                    retry_due_ms,
                    entry_json,
                    self._archive,
                ],
            )
        )

    async def erase_records(
        self, client: Client, shard: int, customer_id: str, events: list[tuple[str, str]]
    ) -> tuple[int, int]:
        """Erase the personal fields of these (source, event id) records of the customer's shard and take
        them off the customer's timeline; an event in flight ends no_binding, with its fallback notice.
        Idempotent. Returns (records erased now, timeline entries removed)."""
        erased, removed = await self._erase_records(
            client,
            [
                keys.customer_events(shard, customer_id),
                keys.notices(shard),
                keys.archive(shard),
                *(keys.event(shard, source, event_id) for source, event_id in events),
            ],
            [
                self._callback_sources,
                self._archive,
                *(f"{source}:{event_id}" for source, event_id in events),
            ],
        )
        return int(erased), int(removed)

    async def erase_customer(self, client: Client, shard: int, customer_id: str) -> tuple[int, int] | None:
        """Delete the customer's preferences, held events, rate-limit log and timeline, unless the timeline
        still holds events (accepted meanwhile: erase_records them first). Returns (preferences deleted 0|1,
        held events deleted), or None when events are left on the timeline."""
        prefs, held = await self._erase_customer(
            client,
            [
                keys.customer_events(shard, customer_id),
                keys.preferences(shard, customer_id),
                keys.digest_held(shard, customer_id),
                keys.digest_due(shard),
                keys.rate_log(shard, customer_id),
            ],
            [customer_id],
        )
        return None if int(prefs) < 0 else (int(prefs), int(held))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
