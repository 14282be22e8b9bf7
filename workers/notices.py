"""Status notices to core banking (its SMS fallback): POST each, signed, and record the outcome with the XACK.

The finish scripts queue a notice on `keys.notices(shard)` in the same step as an event's final state; this
module posts it to the source's `PUSHGW_CALLBACK_URLS` entry and ends every path in one `notice_finish` script
call (outcome on the event record + XACK, and the retry or dead letter), exactly like a WeChat delivery.

Signature (Standard Webhooks, symmetric): headers `webhook-id`, `webhook-timestamp` (unix seconds of this
attempt) and `webhook-signature` = `v1,` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}")). The key is
the source's API secret (`PUSHGW_API_KEYS`): its UTF-8 bytes, or, for a secret written in the spec's own form
`whsec_<base64>`, the decoded bytes; so a receiver using a Standard Webhooks library is given
`"whsec_" + base64(secret)` (or the whsec_ secret itself). During a rotation
(`PUSHGW_CALLBACK_PREVIOUS_SECRETS`) the header carries the current and the previous signature, space apart.

`webhook-id` is derived from (source, event id, type): the same on every retry and replay, so receivers
deduplicate on it. Outcomes: 2xx sent; 408, 429, 5xx, timeouts and refused connections are retried (capped
exponential backoff with full jitter, at least the receiver's Retry-After up to an hour); other answers
(3xx, 4xx) are permanent and dead-lettered; retries end in the notice dead letters after
`PUSHGW_NOTICE_MAX_ATTEMPTS` or `PUSHGW_NOTICE_MAX_AGE_S`. Never logged: URLs, headers, bodies, secrets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum

import aiohttp
import orjson

from gateway.core import clock, keys, metrics
from gateway.core.entries import ATTEMPTS, CUSTOMER_ID, EVENT_ID, REPLAYED_MS, SOURCE
from gateway.core.logs import bound
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.backoff import backoff_s
from workers.consumer import Consumer, Limits, Streams

log = logging.getLogger(__name__)
SECRET_PREFIX = "whsec_"  # noqa: S105 - the spec's serialisation prefix, not a secret
RETRY_AFTER_MOST_S = 3600.0  # a receiver's Retry-After is honoured up to this
REASON_MOST_CHARS = 120


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class Answer:
    """What one POST got: an HTTP status, or no answer (`error` "timeout" or "connection")."""

    status: int | None
    error: str = ""
    retry_after_s: float | None = None

    @property
    def label(self) -> str:
        return f"http_{self.status}" if self.status is not None else self.error


def classify(answer: Answer) -> Outcome:
    """2xx sent; 408, 429, 5xx and no answer retried; anything else (3xx, 4xx) permanent."""
    status = answer.status
    if status is None or status in (408, 429) or status >= 500:
        return Outcome.RETRY
    if 200 <= status < 300:
        return Outcome.SENT
    return Outcome.PERMANENT


def parse_retry_after(raw: str | None, now_s: float) -> float | None:
    """Seconds to wait from a Retry-After header (delay-seconds or HTTP-date), at most an hour; None when
    absent, unparsable or in the past."""
    if not raw:
        return None
    raw = raw.strip()
    if raw.isascii() and raw.isdigit():
        return min(float(raw[:12]), RETRY_AFTER_MOST_S)
    try:
        moment = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        return None
    seconds = moment.timestamp() - now_s
    return min(seconds, RETRY_AFTER_MOST_S) if seconds >= 0 else None


def signing_key(secret: str) -> bytes:
    """The HMAC key of an API secret: the decoded bytes of a `whsec_<base64>` secret, else its UTF-8 bytes."""
    if secret.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
        except binascii.Error:
            key = b""
        if key:
            return key
    return secret.encode()


def sign(key: bytes, webhook_id: str, timestamp_s: int, body: bytes) -> str:
    """One Standard Webhooks symmetric signature: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`."""
    signed = f"{webhook_id}.{timestamp_s}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def webhook_id(source: str, event_id: str, notice_type: str) -> str:
    """The notice's stable id (no dots, same on every retry and replay): receivers deduplicate on it."""
    digest = hashlib.sha256(f"{source}\n{event_id}\n{notice_type}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def _public_reason(reason: str) -> str:
    """The reason as core banking sees it: a render error's detail stays inside (it may quote event data)."""
    return "render_error" if reason.startswith("render") else reason[:REASON_MOST_CHARS]


@dataclass(frozen=True)
class Notice:
    """One notice stream entry (fields src, eid, cid, type, status, reason, at, att)."""

    shard: int
    entry_id: str
    fields: dict[str, str]

    @property
    def source(self) -> str:
        return self.fields[SOURCE]

    @property
    def event_id(self) -> str:
        return self.fields[EVENT_ID]

    @property
    def type(self) -> str:
        return self.fields["type"]

    @property
    def type_label(self) -> str:
        return self.type if self.type in metrics.NOTICE_TYPES else "other"

    @property
    def attempts(self) -> int:
        return int(self.fields.get(ATTEMPTS) or 0)

    @property
    def at_ms(self) -> int:
        return int(self.fields.get("at") or 0)

    @property
    def age_from_ms(self) -> int:
        """Where its age is counted from: when it was queued, or its last replay."""
        return max(self.at_ms, int(self.fields.get(REPLAYED_MS) or 0))

    @property
    def record(self) -> str:
        return keys.event(self.shard, self.source, self.event_id)

    @property
    def webhook_id(self) -> str:
        return webhook_id(self.source, self.event_id, self.type)

    def body(self) -> bytes:
        """The JSON body: the same bytes on every attempt. Ids, status and reason only: no account, openid
        or amount."""
        at = datetime.fromtimestamp(self.at_ms / 1000, UTC).isoformat(timespec="milliseconds")
        data = {
            "event_id": self.event_id,
            "customer_id": self.fields.get(CUSTOMER_ID, ""),
            "status": self.fields.get("status", ""),
            "reason": _public_reason(self.fields.get("reason", "")),
        }
        return orjson.dumps({"type": self.type, "timestamp": at.replace("+00:00", "Z"), "data": data})

    def to_json(self, attempts: int) -> bytes:
        """The entry as the retry set and the dead-letter stream keep it, with its attempts so far."""
        return orjson.dumps({**self.fields, ATTEMPTS: str(attempts)}, option=orjson.OPT_SORT_KEYS)


def notice_consumer(settings: Settings, redis: RedisClient, notifier: Notifier, name: str) -> Consumer:
    """The consumer of every shard's notice stream, with its own concurrency."""
    streams = Streams(keys.NOTICE_GROUP, ({keys.notices(shard): shard for shard in range(settings.shards)},))
    limits = Limits.of(settings, settings.notice_concurrency)
    return Consumer(redis, name, streams, notifier.handle, limits, metrics.NOTICE_INFLIGHT)


class Notifier:
    def __init__(
        self,
        settings: Settings,
        redis: RedisClient,
        scripts: Scripts,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._settings = settings
        self._redis = redis
        self._scripts = scripts
        self._uniform = uniform
        self._session: aiohttp.ClientSession | None = None
        self.outcomes: Counter[str] = Counter()  # what each handled notice came to (the shutdown summary)

    async def close(self) -> None:
        """Close the HTTP session (if one was opened)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._settings.notice_concurrency)
            timeout = aiohttp.ClientTimeout(total=self._settings.callback_timeout_s)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def handle(self, shard: int, entry_id: str, fields: dict[str, str]) -> None:
        """The consumer's handler of a notice stream entry. Raises only for Redis failures (the entry stays
        pending and is reclaimed: the receiver may then see the same webhook-id twice)."""
        notice = Notice(shard, entry_id, fields)
        with bound(event_id=notice.event_id):
            url = self._settings.callback_urls.get(notice.source)
            if url is None or notice.source not in self._settings.api_keys:
                # the callback was removed after the notice was queued: keep it for a replay
                await self._finish(notice, "failed", notice.attempts, "no_callback_url")
                return
            attempt = notice.attempts + 1
            started = time.perf_counter()
            answer = await self._post(url, notice)
            elapsed_ms = str(int((time.perf_counter() - started) * 1000))
            with bound(attempt=str(attempt), elapsed_ms=elapsed_ms):
                await self._apply(notice, attempt, answer)

    def headers(self, notice: Notice, body: bytes, timestamp_s: int) -> dict[str, str]:
        """The Standard Webhooks headers: signed with the source's secret, and its previous one while it
        is rotated."""
        secrets = [self._settings.api_keys[notice.source]]
        previous = self._settings.callback_previous_secrets.get(notice.source)
        if previous is not None and previous != secrets[0]:
            secrets.append(previous)
        signatures = " ".join(
            sign(signing_key(secret), notice.webhook_id, timestamp_s, body) for secret in secrets
        )
        return {
            "Content-Type": "application/json",
            "User-Agent": "pushgw-notifier",
            "webhook-id": notice.webhook_id,
            "webhook-timestamp": str(timestamp_s),
            "webhook-signature": signatures,
        }

    async def _post(self, url: str, notice: Notice) -> Answer:
        body = notice.body()
        headers = self.headers(notice, body, int(clock.now_s()))
        started = time.perf_counter()
        try:
            # redirects are not followed: a signed notice goes to the configured URL or nowhere
            async with self._client().post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                retry_after = parse_retry_after(response.headers.get("Retry-After"), clock.now_s())
                return Answer(response.status, retry_after_s=retry_after)
        except TimeoutError:
            return Answer(None, "timeout")
        except (aiohttp.ClientError, OSError):
            return Answer(None, "connection")
        finally:
            metrics.NOTICE_DURATION.observe(time.perf_counter() - started)

    async def _apply(self, notice: Notice, attempt: int, answer: Answer) -> None:
        outcome = classify(answer)
        if outcome is Outcome.SENT:
            await self._finish(notice, "sent", attempt)
        elif outcome is Outcome.PERMANENT:
            await self._finish(notice, "failed", attempt, answer.label)
        elif attempt >= self._settings.notice_max_attempts:
            await self._finish(notice, "dead_lettered", attempt, f"max_attempts: {answer.label}")
        else:
            await self._retry(notice, attempt, answer)

    async def _retry(self, notice: Notice, attempt: int, answer: Answer) -> None:
        s = self._settings
        delay_s = backoff_s(attempt, s.retry_base_s, s.retry_cap_s, self._uniform)
        if answer.retry_after_s is not None:
            delay_s = max(delay_s, answer.retry_after_s)
        due_ms = clock.now_ms() + int(delay_s * 1000)
        if due_ms - notice.age_from_ms > s.notice_max_age_s * 1000:
            await self._finish(notice, "dead_lettered", attempt, f"max_age: {answer.label}")
            return
        await self._finish(notice, "retry", attempt, answer.label, due_ms)

    async def _finish(
        self, notice: Notice, outcome: str, attempts: int, reason: str = "", due_ms: int = 0
    ) -> None:
        # shielded: once the receiver answered, the outcome must be recorded even if this task is cancelled
        recorded = await asyncio.shield(
            self._scripts.notice_finish(
                self._redis,
                shard=notice.shard,
                entry_id=notice.entry_id,
                record=notice.record,
                outcome=outcome,
                attempts=attempts,
                reason=reason,
                retry_due_ms=due_ms,
                entry_json=notice.to_json(attempts),
            )
        )
        if not recorded:  # another consumer finished this entry first
            return
        counted = "retried" if outcome == "retry" else outcome
        self.outcomes[counted] += 1
        metrics.NOTICES.labels(counted, notice.type_label).inc()
        level = logging.INFO if outcome in ("sent", "retry") else logging.WARNING
        log.log(level, "notice %s", counted, extra={"type": notice.type_label, "reason": reason or None})
