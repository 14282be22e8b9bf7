"""Ingesting events into Redis: concurrent single-event requests share round trips; a batch is one.

Each request still gets its own answer, and only after Redis confirmed its write (202 means durable).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from gateway.core import metrics
from gateway.core.coalesce import Coalescer
from gateway.core.errors import ServiceUnavailable
from gateway.core.redis import AnyPipeline, RedisClient
from gateway.core.scripts import IngestArgs, Scripts

log = logging.getLogger(__name__)

Result = tuple[str, str]
_RETRY_AFTER_S = 1.0
_T = TypeVar("_T")


def _result(raw: list[Any]) -> Result:
    [answer] = raw
    if isinstance(answer, Exception):
        raise answer
    status, detail = answer
    return str(status), str(detail)


class Ingestor:
    """Runs the ingest script for events within the Redis deadline; `coalesce=False` gives each request
    its own round trip (the benchmark's baseline); `wait_replicas` > 0 answers only once that many replicas
    hold the writes (Redis WAIT within half the deadline; fewer -> ServiceUnavailable)."""

    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        timeout_s: float,
        *,
        coalesce: bool = True,
        wait_replicas: int = 0,
    ) -> None:
        self._scripts = scripts
        self._timeout_s = timeout_s
        self._coalescer = Coalescer(
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

    async def _queue(self, pipe: AnyPipeline, args: IngestArgs) -> int:
        await self._scripts.ingest(pipe, args)
        return 1

    async def submit(self, args: IngestArgs) -> Result:
        """Ingest one event. Raises ServiceUnavailable when Redis fails or misses the deadline."""
        return _result(await self._within_deadline(self._coalescer.submit(args)))

    async def submit_many(self, batch: list[IngestArgs]) -> list[Result]:
        """Ingest a batch in one pipeline; results in order. Raises ServiceUnavailable."""
        return [_result(raw) for raw in await self._within_deadline(self._coalescer.submit_many(batch))]

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
