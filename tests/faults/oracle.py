"""The one oracle of every fault test: what was accepted must end in exactly one final state, and at most one
message per (openid, event id) may reach the user.

A test sends its load through `Oracle.post`/`post_batch` (or hands answers to `record`), which remembers every
event id the gateway accepted (202 queued or digested, or 200 duplicate of one it accepted). At the end
`Oracle.verdict` waits until each of them is final (delivered, failed, dead_lettered, no_binding, suppressed),
reads the records in Redis and the simulator's messages, and returns the counts: nothing lost, nothing doubled
is asserted there, and the counts go to the session's report (tests/faults/conftest.py).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
from redis.exceptions import RedisError

from gateway.core import keys
from tests.conftest import Stack
from tests.support import KEY_ID
from workers.render import client_msg_id

NO_ANSWER = (TimeoutError, OSError, aiohttp.ClientError)  # what a request that got no answer raises
FINAL = frozenset({"delivered", "failed", "dead_lettered", "no_binding", "suppressed"})
ACCEPTED = frozenset({"queued", "digested"})


@dataclass
class Counts:
    """What one scenario did; `lost` and `doubled` must be 0."""

    scenario: str
    load: str
    sent: int = 0
    accepted: int = 0
    refused: int = 0  # 429/503 answers (the client retries those; they are not promises)
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0
    no_binding: int = 0
    lost: int = 0  # accepted, and at the end not final, gone from Redis, or delivered without a message
    doubled: int = 0  # (openid, event id) with more than one message at the user
    recovery_s: float | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        recovery = "-" if self.recovery_s is None else f"{self.recovery_s:.1f}s"
        extra = " ".join(f"{name}={value}" for name, value in self.notes.items())
        return (
            f"{self.scenario}: load={self.load} sent={self.sent} accepted={self.accepted} "
            f"refused={self.refused} delivered={self.delivered} failed={self.failed} "
            f"dead_lettered={self.dead_lettered} no_binding={self.no_binding} lost={self.lost} "
            f"doubled={self.doubled} recovery={recovery} {extra}"
        ).rstrip()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


REPORT: list[Counts] = []  # every verdict of the session, written out by tests/faults/conftest.py


class Oracle:
    def __init__(self, stack: Stack, scenario: str, load: str) -> None:
        self.stack = stack
        self.counts = Counts(scenario, load)
        self.accepted: dict[str, str] = {}  # event id -> customer id
        self.openids: dict[str, str] = {}  # customer id -> openid
        self.digested: set[str] = set()
        self._started = time.monotonic()

    async def bind(self, customer_id: str, openid: str) -> None:
        await self.stack.client.bind(customer_id, openid)
        self.openids[customer_id] = openid

    def record(self, event: dict[str, Any], status: int, body: Any) -> None:
        """Remember one answer to `event` (single or one batch item)."""
        self.counts.sent += 1
        answer = body.get("status") if isinstance(body, dict) else None
        if status in (200, 202) and answer in ACCEPTED:
            self.accepted[event["event_id"]] = event["customer_id"]
            if answer == "digested":  # reaches the user inside a digest message, under the digest's id
                self.digested.add(event["event_id"])
        elif status == 200 and answer == "duplicate":  # a retry after an answer the client never saw
            self.accepted[event["event_id"]] = event["customer_id"]
        elif status in (429, 503) or answer == "rate_limited":
            self.counts.refused += 1

    def unanswered(self) -> None:
        """Count a request that got no answer (connection refused or cut, timeout): not a promise either way;
        the client sends it again (noted as no_answer)."""
        self.counts.sent += 1
        self.counts.notes["no_answer"] = self.counts.notes.get("no_answer", 0) + 1

    async def post(self, event: dict[str, Any]) -> int:
        """POST one event and record the answer; returns the HTTP status (0 when the connection failed)."""
        try:
            status, body = await self.stack.client.post_event(event)
        except NO_ANSWER:
            self.unanswered()
            return 0
        self.record(event, status, body)
        return status

    async def post_batch(self, events: list[dict[str, Any]]) -> int:
        status, body = await self.stack.client.call("POST", "/v1/events/batch", {"events": events})
        if status != 200:
            for event in events:
                self.record(event, status, body)
            return status
        for event, result in zip(events, body["results"], strict=True):
            self.record(event, 200 if "error" not in result else 422, result)
        return status

    async def statuses(self) -> dict[str, str | None]:
        """event id -> status of every accepted event, straight from its record (None: the record is gone)."""
        shards = self.stack.settings.shards
        ids = list(self.accepted)
        async with self.stack.redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                shard = keys.shard_of(self.accepted[event_id], shards)
                pipe.hget(keys.event(shard, KEY_ID, event_id), "status")
            found = await pipe.execute()
        return {e: None if status is None else str(status) for e, status in zip(ids, found, strict=True)}

    async def settle(self, timeout_s: float = 60.0) -> dict[str, str | None]:
        """Wait until every accepted event is final (or the time is up); returns the last statuses."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                statuses = await self.statuses()
            except RedisError:  # the test's own client after a Redis restart: its next call reconnects
                await asyncio.sleep(0.1)
                continue
            if all(status in FINAL for status in statuses.values()) or time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.1)

    async def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = (await self.stack.sim("GET", "/sim/messages"))["messages"]
        return found

    async def verdict(
        self, *, timeout_s: float = 60.0, recovery_s: float | None = None, **notes: Any
    ) -> Counts:
        """Settle, count, report, and assert the promise: nothing lost, nothing doubled."""
        statuses = await self.settle(timeout_s)
        tally = Counter(status or "missing" for status in statuses.values())
        per_user = Counter((m["touser"], m["client_msg_id"]) for m in await self.messages())
        reached = {sent for _, sent in per_user}  # client_msg_ids: an event's is its source's and its id
        counts = self.counts
        counts.accepted = len(self.accepted)
        counts.delivered, counts.failed = tally["delivered"], tally["failed"]
        counts.dead_lettered, counts.no_binding = tally["dead_lettered"], tally["no_binding"]
        not_final = [event_id for event_id, status in statuses.items() if status not in FINAL]
        unseen = [
            e
            for e, status in statuses.items()
            if status == "delivered" and client_msg_id(KEY_ID, e) not in reached and e not in self.digested
        ]
        counts.lost = len(not_final) + len(unseen)
        counts.doubled = sum(1 for seen in per_user.values() if seen > 1)
        counts.recovery_s = recovery_s
        counts.notes.update(notes, elapsed_s=round(time.monotonic() - self._started, 1))
        REPORT.append(counts)
        stuck = Counter(statuses[e] for e in not_final)
        assert not not_final, f"{len(not_final)} accepted events are not final: {stuck}"
        assert not unseen, f"{len(unseen)} events recorded delivered never reached the user"
        assert counts.doubled == 0, "a user got the same event twice"
        return counts
