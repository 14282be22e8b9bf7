"""Deliver one stream entry: ledger check, binding, render, send, and record the outcome with the XACK.

Every path ends in one `finish` script call that writes the status and acknowledges the entry atomically;
an exception before that leaves the entry pending, so another worker reclaims it after the visibility
timeout. WeChat's client_msg_id (the source and event id, `workers.render.client_msg_id`) makes such a
second send harmless.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

import orjson
from redis.asyncio.cluster import RedisCluster

from gateway.core import clock, keys, metrics
from gateway.core.coalesce import Coalescer, Split
from gateway.core.entries import SOURCE, Entry
from gateway.core.logs import bound
from gateway.core.recipient import recipient_hash
from gateway.core.redis import AnyPipeline, RedisClient, text_map
from gateway.core.scripts import EntryOutcome, Scripts
from gateway.core.settings import Settings
from gateway.core.status import EventStatus
from workers.backoff import backoff_s
from workers.breaker import Breaker
from workers.consumer import Consumer, Limits, Streams
from workers.render import SHANGHAI, RenderError, Templates, render_digest, render_fields
from workers.throttle import Throttle
from workers.token import TokenCache
from workers.wechat import Answer, Outcome, TokenError, Verdict, Wait, WeChatClient, classify

log = logging.getLogger(__name__)
SUSPEND_S = 600.0
# WeChat drops a repeat of touser + client_msg_id for 10 minutes. After a send with no clear answer, a resend
# is safe only within that window (a minute kept for clocks and the send's own time)
UNCLEAR_RESEND_WINDOW_S = 540
# outcomes in one finish script call at most (a script holds every other client back while it runs)
FINISHES_PER_CALL = 64
_KEEPS_ENTRY = frozenset({EventStatus.RETRYING, EventStatus.DEAD_LETTERED})
_FINAL_VALUES = frozenset(status.value for status in EventStatus if status.is_final)  # as Redis returns them


_GAVE_UP = ("max_attempts", "max_age")  # dead-letter reasons followed by the last attempt's errcode label


def dead_letter_label(reason: str) -> str:
    """The bounded `reason` label of pushgw_dead_letters_total: `max_attempts: <errcode>` and `max_age:
    <errcode>` as recorded (the errcode is the bounded label of workers/wechat.py: `-1`, `45009`,
    `http_503`, `timeout`, ...), else the reason's kind alone (`render`, `unknown_appid`, `47003`): never
    the free text after it (an appid, a render detail)."""
    kind, _, detail = reason.partition(":")
    return f"{kind}: {detail.strip()}" if kind in _GAVE_UP and detail.strip() else kind


def _raised(results: list[Any]) -> list[Any]:
    """Results of a coalesced round trip; a command's error is raised (the entry stays pending)."""
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


class Finish(NamedTuple):
    """What `finish` records for an entry (the entry also gives the msgid index of a delivered message its
    customer and acceptance time)."""

    entry: Entry
    outcome: EntryOutcome


@dataclass(frozen=True)
class Sender:
    """What a delivery needs to reach one WeChat official account: its client, token cache, circuit
    (the breaker keyed by `appid`) and template ids (None: the Deliverer's, the default account's)."""

    client: WeChatClient
    tokens: TokenCache
    breaker: Breaker
    appid: str
    templates: Templates | None = None
    throttle: Throttle | None = None  # the global outbound rate limit of the appid (None: no limit)


def delivery_consumer(settings: Settings, redis: RedisClient, deliverer: Deliverer, name: str) -> Consumer:
    """The consumer of every shard's delivery streams: the critical streams first."""
    shards = range(settings.shards)
    tiers = tuple({keys.stream(shard, critical): shard for shard in shards} for critical in (True, False))
    limits = Limits.of(settings, settings.worker_concurrency)
    return Consumer(redis, name, Streams(keys.GROUP, tiers), deliverer.handle, limits, metrics.INFLIGHT)


class Deliverer:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        sender: Sender,
        templates: Templates,
        uniform: Callable[[float, float], float] = random.uniform,
        accounts: Sequence[Sender] = (),
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._scripts = scripts
        self._sender = sender  # the default account: bindings without an appid
        self._senders = {account.appid: account for account in (*accounts, sender)}
        self._templates = templates
        self._uniform = uniform
        self.outcomes: Counter[str] = Counter()  # what each handled entry came to (the shutdown summary)
        # deliveries running at once share Redis round trips: one delivery's lookup (an Entry) goes out with
        # another's Finish, so there are about half as many pipelines as with a coalescer for each
        self._round_trips: Coalescer[Entry | Finish] = Coalescer(
            redis, self._queue, scripts.load, deadline_s=settings.redis_timeout_s
        )
        self._cluster = isinstance(redis, RedisCluster)

    async def close(self) -> None:
        """Send outcomes still waiting for a round trip."""
        await self._round_trips.close()

    async def handle(self, shard: int, entry_id: str, fields: dict[str, str]) -> None:
        """The consumer's handler of a delivery stream entry."""
        await self.deliver(Entry.from_fields(shard, entry_id, fields))

    async def deliver(self, entry: Entry) -> None:
        """Take the entry to its next state. Raises only for Redis failures (the entry stays pending)."""
        with bound(event_id=entry.message_id):
            statuses, binding = await self._lookup(entry)
            if all(status in _FINAL_VALUES for status in statuses):
                # the delivered-ledger: a reclaimed entry whose records are final is only acknowledged
                await self._redis.xack(entry.stream, keys.GROUP, entry.entry_id)
                self.outcomes["already_final"] += 1
                return
            if binding.get("status") != "active":
                reason = "no_binding" if not binding else f"binding_{binding.get('status')}"
                await self._finish(entry, EventStatus.NO_BINDING, entry.attempts, error=reason)
                return
            sender = self._senders.get(binding.get("appid") or self._sender.appid)
            if sender is None:  # never through another account: replay once the account is configured
                error = f"unknown_appid: {binding['appid']}"
                await self._finish(entry, EventStatus.DEAD_LETTERED, entry.attempts, error=error)
                return
            try:
                message = self._render(entry, binding["openid"], sender.templates or self._templates)
            except Exception as exc:  # rendering is pure: what fails once fails on every reclaim, for ever
                reason = f"render: {exc if isinstance(exc, RenderError) else type(exc).__name__}"
                await self._finish(entry, EventStatus.DEAD_LETTERED, entry.attempts, error=reason)
                return
            await self._send(entry, message, binding["openid"], sender)

    async def _lookup(self, entry: Entry) -> tuple[list[str | None], dict[str, str]]:
        """The statuses of the entry's records and the customer's binding, in a shared round trip."""
        *statuses, binding = _raised(await self._round_trips.enqueue(entry))
        return statuses, text_map(binding)

    async def _queue(self, pipe: AnyPipeline, items: list[Entry | Finish]) -> Split:
        """Each lookup and msgid index its own commands; the outcomes in finish script calls of at most
        FINISHES_PER_CALL, one shard each on a cluster (a call's keys are in one slot)."""
        counts: list[int] = []  # per item: the commands of its own
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            if isinstance(item, Entry):
                counts.append(self._queue_lookup(pipe, item))
            else:
                counts.append(self._queue_msgid(pipe, item))
                groups.setdefault(item.entry.shard if self._cluster else 0, []).append(index)
        calls = [
            ids[at : at + FINISHES_PER_CALL]
            for ids in groups.values()
            for at in range(0, len(ids), FINISHES_PER_CALL)
        ]
        for call in calls:
            await self._scripts.finish_many(pipe, [cast(Finish, items[index]).outcome for index in call])

        def split(replies: list[Any]) -> list[list[Any]]:
            results, start = [], 0
            for count in counts:
                results.append(replies[start : start + count])
                start += count
            for answer, call in zip(replies[start:], calls, strict=True):
                for position, index in enumerate(call):
                    results[index].append(answer if isinstance(answer, Exception) else answer[position])
            return results

        return split

    @staticmethod
    def _queue_lookup(pipe: AnyPipeline, entry: Entry) -> int:
        records = entry.records
        for record in records:
            pipe.hget(record, "status")
        pipe.hgetall(keys.binding(entry.customer_id))
        return len(records) + 1

    def _queue_msgid(self, pipe: AnyPipeline, finish: Finish) -> int:
        """The msgid index of a delivered message (0 or 1 command), before its finish: if that fails the
        entry is re-sent and the same msgid indexed again."""
        entry, outcome = finish
        if outcome.status is not EventStatus.DELIVERED or not outcome.msgid:
            return 0
        index = orjson.dumps({"cid": entry.customer_id, "records": entry.records, "acc": entry.accepted_ms})
        # what pipe.set(..., ex=) sends, without its per-call argument checks
        pipe.execute_command("SET", keys.msgid(outcome.msgid), index, "EX", self._settings.event_ttl_s)
        return 1

    @staticmethod
    def _render(entry: Entry, openid: str, templates: Templates) -> dict[str, Any]:
        if entry.is_digest:
            return render_digest(templates, entry.message_id, entry.events, openid)
        return render_fields(templates, entry.event_fields, openid, entry.fields[SOURCE])

    async def _send(self, entry: Entry, message: dict[str, Any], openid: str, sender: Sender) -> None:
        unclear_since_ms = entry.unclear_since_ms
        if unclear_since_ms and clock.now_ms() - unclear_since_ms > UNCLEAR_RESEND_WINDOW_S * 1000:
            # WeChat may have sent it, and would no longer drop a repeat: rather than risk a second alert,
            # fail it, which asks core banking (the fallback notice) to reach the customer another way
            metrics.child(metrics.DELIVERIES, Outcome.PERMANENT.value, "unclear").inc()
            await self._finish(entry, EventStatus.FAILED, entry.attempts, error="unclear_past_dedup_window")
            return
        wait_s = sender.breaker.blocked_for_s(sender.appid)
        if wait_s > 0:
            await self._defer(entry, wait_s)
            return
        attempt = entry.attempts + 1
        started = clock.now_ms()
        try:
            answer = await self._send_with_token(message, sender)
        except TokenError as exc:
            answer = exc.send_answer
        verdict = classify(answer)
        self._count(verdict, answer, sender)
        if answer.unclear and not unclear_since_ms:
            entry = entry.marked_unclear(started)
        elapsed_ms = str(clock.now_ms() - started)
        with bound(appid=sender.appid, attempt=str(attempt), errcode=answer.label, elapsed_ms=elapsed_ms):
            await self._apply(entry, attempt, verdict, answer, openid, sender)

    @staticmethod
    async def _send_with_token(message: dict[str, Any], sender: Sender) -> Answer:
        """Send; on a token error refresh the token (if ours is the stored one) and send once more at once."""
        tokens = sender.tokens
        token = await tokens.get()
        answer = await _send_within_limit(token, message, sender)
        if classify(answer).outcome is Outcome.REFRESH_TOKEN:
            await tokens.invalidate(token)
            answer = await _send_within_limit(await tokens.get(), message, sender)
        return answer

    @staticmethod
    def _count(verdict: Verdict, answer: Answer, sender: Sender) -> None:
        breaker, appid = sender.breaker, sender.appid
        if verdict.outcome is Outcome.DELIVERED:
            breaker.succeeded(appid)
        elif verdict.breaker_failure:
            breaker.failed(appid)
        metrics.child(metrics.DELIVERIES, verdict.outcome.value, answer.label).inc()
        metrics.child(metrics.ACCOUNT_DELIVERIES, appid, verdict.outcome.value).inc()

    async def _apply(
        self, entry: Entry, attempt: int, verdict: Verdict, answer: Answer, openid: str, sender: Sender
    ) -> None:
        outcome = verdict.outcome
        if outcome is Outcome.DELIVERED:
            msgid = answer.msgid or ""
            to_hash = recipient_hash(msgid, openid) if msgid else ""
            await self._finish(entry, EventStatus.DELIVERED, attempt, msgid=msgid, to_hash=to_hash)
            latency = metrics.CRITICAL_DELIVERY_LATENCY if entry.critical else metrics.DELIVERY_LATENCY
            latency.observe(max(0, clock.now_ms() - entry.accepted_ms) / 1000)
        elif outcome is Outcome.PERMANENT:
            await self._finish(entry, EventStatus.FAILED, attempt, error=answer.label)
            if state := verdict.binding_state:
                # only if still bound to that openid: the customer may have been re-bound since the send
                await self._scripts.mark_binding(self._redis, entry.customer_id, openid, state)
        elif outcome is Outcome.DEAD_LETTER:
            await self._finish(entry, EventStatus.DEAD_LETTERED, attempt, error=answer.label)
        else:
            spent = attempt if verdict.spends_attempt else entry.attempts
            await self._retry(entry, spent, answer.label, verdict.wait, sender)

    async def _retry(self, entry: Entry, attempt: int, reason: str, wait: Wait, sender: Sender) -> None:
        s = self._settings
        if attempt >= s.max_attempts:
            await self._finish(entry, EventStatus.DEAD_LETTERED, attempt, error=f"max_attempts: {reason}")
            return
        delay_s = self._delay_s(attempt, wait, sender)
        await self._schedule(entry, attempt, delay_s, reason)

    async def _defer(self, entry: Entry, wait_s: float) -> None:
        """The circuit is open: try again once it may be closed, without spending an attempt."""
        await self._schedule(entry, entry.attempts, wait_s + self._uniform(0.0, 1.0), "circuit_open")

    async def _schedule(self, entry: Entry, attempts: int, delay_s: float, reason: str) -> None:
        due_ms = clock.now_ms() + int(delay_s * 1000)
        if due_ms - entry.age_from_ms > self._settings.max_age_s * 1000:
            await self._finish(entry, EventStatus.DEAD_LETTERED, attempts, error=f"max_age: {reason}")
            return
        await self._finish(entry, EventStatus.RETRYING, attempts, error=reason, due_ms=due_ms)
        metrics.child(metrics.RETRIES, reason).inc()

    def _delay_s(self, attempt: int, wait: Wait, sender: Sender | None = None) -> float:
        """The retry's delay; a daily quota or a suspension also pauses the account's circuit (`sender`,
        by default the default account's)."""
        s, now, sender = self._settings, datetime.now(SHANGHAI), sender or self._sender
        if wait is Wait.NEXT_MINUTE:  # the appid pauses too: every send before then would get 45011
            delay_s = 60 - now.second - now.microsecond / 1e6
            sender.breaker.pause(sender.appid, delay_s, "minute quota reached", alert=False)
            return delay_s + self._uniform(0.0, 5.0)
        if wait is Wait.QUOTA_RESET:
            midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
            delay_s = (midnight - now).total_seconds() + self._uniform(0.0, 60.0)
            sender.breaker.pause(sender.appid, delay_s, "daily quota reached")
            return delay_s
        if wait is Wait.SUSPEND:
            sender.breaker.pause(sender.appid, SUSPEND_S, "account suspended or no permission")
            return SUSPEND_S + self._uniform(0.0, 10.0)
        return backoff_s(attempt, s.retry_base_s, s.retry_cap_s, self._uniform)

    async def _finish(
        self,
        entry: Entry,
        status: EventStatus,
        attempts: int,
        *,
        error: str = "",
        msgid: str = "",
        to_hash: str = "",
        due_ms: int = 0,
    ) -> None:
        outcome = EntryOutcome(
            entry.shard,
            entry.critical,
            entry.entry_id,
            entry.records,
            status,
            attempts,
            last_error=error,
            msgid=msgid,
            to_hash=to_hash,  # the recipient a finish event must name (gateway/core/recipient.py)
            retry_due_ms=due_ms,
            # only a retry or a dead letter keeps the entry (finish.lua reads it for nothing else)
            entry_json=entry.to_json(attempts) if status in _KEEPS_ENTRY else b"",
        )
        # shielded: once WeChat answered, the outcome must be recorded even if this task is cancelled
        _raised(await asyncio.shield(self._round_trips.enqueue(Finish(entry, outcome))))
        self.outcomes[status.value] += 1
        if status is EventStatus.DEAD_LETTERED:
            metrics.child(metrics.DEAD_LETTERS, dead_letter_label(error)).inc()
        if status is EventStatus.NO_BINDING:
            metrics.child(metrics.DELIVERIES, "no_binding", "none").inc()
        if log.isEnabledFor(logging.INFO):  # its `extra` would be built on every delivery for nothing
            log.info("delivery %s", status.value, extra={"attempt": attempts, "reason": error or None})


async def _send_within_limit(token: str, message: dict[str, Any], sender: Sender) -> Answer:
    """One template send, after taking a permit of the global outbound rate limit (each send takes one)."""
    if sender.throttle is not None:
        await sender.throttle.acquire()
    return await sender.client.send_template(token, message)
