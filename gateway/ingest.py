"""Ingesting events into Redis: concurrent single-event requests share round trips; a batch is one.

Each request still gets its own answer, and only after Redis confirmed its write (202 means durable).

With several shards an event's record lives in its customer's shard, so the same event id sent for two
customers would find no record of the other. Before the ingest script, each event then claims its id in a
shard of the id's own (`keys.event_claim`, SET NX GET with the payload hash): another hash there is a
`conflict`, whatever the customer. The claim stays for the dedup horizon, even when the event is then refused
(a 429): a re-send of the same event is unaffected, and releasing it could let a copy in beside an accepted
one; only a claim that the script's own record contradicts (another hash) is taken back. A crash between claim
and script leaves the claim; the retry finds its own hash and goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.core import keys, metrics
from gateway.core.coalesce import Coalescer, Split
from gateway.core.errors import ServiceUnavailable
from gateway.core.redis import AnyPipeline, RedisClient
from gateway.core.scripts import IngestArgs, Scripts

log = logging.getLogger(__name__)

Result = tuple[str, str]
_RETRY_AFTER_S = 1.0
_CONFLICT: Result = ("conflict", "")
# events in one ingest script call at most: Redis runs a script to its end, so a call of many events would
# hold every other client (the workers) back for its whole run; 64 is a few milliseconds
EVENTS_PER_CALL = 64
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Claim:
    key: str
    payload_hash: str


def _answer(raw: list[Any]) -> Any:
    [answer] = raw
    if isinstance(answer, Exception):
        raise answer
    return answer


def _result(raw: list[Any]) -> Result:
    status, detail = _answer(raw)
    return str(status), str(detail)


class Ingestor:
    """Runs the ingest script for events within the Redis deadline; `coalesce=False` gives each request
    its own round trip (the benchmark's baseline); `wait_replicas` > 0 answers only once that many replicas
    hold the writes (Redis WAIT within half the deadline; fewer -> ServiceUnavailable); `claim_ttl_s` > 0
    with `shards` > 1 claims each event id before ingesting it (the module's docstring)."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        timeout_s: float,
        *,
        coalesce: bool = True,
        wait_replicas: int = 0,
        shards: int = 1,
        claim_ttl_s: int = 0,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._timeout_s = timeout_s
        self._shards = shards
        self._cluster = isinstance(redis, RedisCluster)
        self._claim_ttl_s = claim_ttl_s if shards > 1 else 0
        self._coalescer: Coalescer[IngestArgs | _Claim] = Coalescer(
            redis,
            self._queue,
            scripts.load,
            deadline_s=timeout_s,
            max_inflight=2 if coalesce else 128,
            max_batch=256 if coalesce else 1,
            observe=metrics.INGEST_BATCH.observe,
            wait_replicas=wait_replicas,
            wait_timeout_ms=max(1, int(timeout_s * 500)),
        )

    async def _queue(self, pipe: AnyPipeline, items: list[IngestArgs | _Claim]) -> Split:
        """Each claim its own SET; the events in ingest script calls of at most EVENTS_PER_CALL, one shard
        each on a cluster (a call's keys are in one slot)."""
        claims = [index for index, item in enumerate(items) if isinstance(item, _Claim)]
        for index in claims:
            claim = cast(_Claim, items[index])
            pipe.set(claim.key, claim.payload_hash, nx=True, get=True, ex=self._claim_ttl_s)
        groups: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            if isinstance(item, IngestArgs):
                group = keys.shard_of(item.customer_id, self._shards) if self._cluster else 0
                groups.setdefault(group, []).append(index)
        calls = [
            ids[at : at + EVENTS_PER_CALL]
            for ids in groups.values()
            for at in range(0, len(ids), EVENTS_PER_CALL)
        ]
        for call in calls:
            await self._scripts.ingest_many(pipe, [cast(IngestArgs, items[index]) for index in call])

        def split(replies: list[Any]) -> list[list[Any]]:
            results: list[list[Any]] = [[] for _ in items]
            for reply, index in zip(replies, claims, strict=False):
                results[index] = [reply]
            for answer, call in zip(replies[len(claims) :], calls, strict=True):
                for position, index in enumerate(call):
                    results[index] = [
                        answer if isinstance(answer, Exception) else answer[2 * position : 2 * position + 2]
                    ]
            return results

        return split

    async def submit(self, args: IngestArgs) -> Result:
        """Ingest one event. Raises ServiceUnavailable when Redis fails or misses the deadline."""
        if not self._claim_ttl_s:  # the common case, one script call: no lists on the way
            return _result(await self._within_deadline(self._coalescer.enqueue(args)))
        [result] = await self._within_deadline(self._ingest([args], together=False))
        return result

    async def submit_many(self, batch: list[IngestArgs]) -> list[Result]:
        """Ingest a batch in one pipeline (two with claims); results in order. Raises ServiceUnavailable."""
        return await self._within_deadline(self._ingest(batch, together=True))

    async def _ingest(self, batch: list[IngestArgs], *, together: bool) -> list[Result]:
        claims = (
            [_Claim(keys.event_claim(a.source, a.event_id, self._shards), a.payload_hash) for a in batch]
            if self._claim_ttl_s
            else []
        )
        seen = [_answer(raw) for raw in await self._send(claims, together)]
        conflicts = {
            index for index, hash_ in enumerate(seen) if hash_ not in (None, claims[index].payload_hash)
        }
        todo = [args for index, args in enumerate(batch) if index not in conflicts]
        answers = iter([_result(raw) for raw in await self._send(todo, together)])
        results = [_CONFLICT if index in conflicts else next(answers) for index in range(len(batch))]
        for index, hash_ in enumerate(seen):
            if hash_ is None and results[index] == _CONFLICT:
                # the record, older than any claim (or outliving it), holds another hash: the claim this
                # request just made must not stand for the refused payload
                await self._scripts.delete_if(self._redis, claims[index].key, claims[index].payload_hash)
        return results

    async def _send(self, items: list[IngestArgs] | list[_Claim], together: bool) -> list[list[Any]]:
        if together:
            return await self._coalescer.submit_many(list(items)) if items else []
        return [await self._coalescer.submit(item) for item in items]  # a single event: at most one

    async def close(self) -> None:
        await self._coalescer.close()

    async def _within_deadline(self, work: Awaitable[_T]) -> _T:
        # the caller's whole wait: queued behind the pipelines in flight, then its round trip (the
        # coalescer's own deadline bounds only the round trip, for every caller in it at once)
        try:
            async with asyncio.timeout(self._timeout_s):
                return await work
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("redis unavailable for ingest: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "the queue is unavailable, retry later", retry_after_s=_RETRY_AFTER_S
            ) from None
