"""Sending ingest scripts to Redis: concurrent single-event requests share round trips; a batch is one.

Each request still gets its own answer, and only after Redis confirmed its write (202 means durable).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from gateway.core import metrics
from gateway.core.errors import ServiceUnavailable
from gateway.core.scripts import IngestArgs, Scripts

log = logging.getLogger(__name__)

Result = tuple[str, str]
_RETRY_AFTER_S = 1.0


def _result(raw: Any) -> Result:
    if isinstance(raw, Exception):
        raise raw
    status, detail = raw
    return str(status), str(detail)


class Ingestor:
    """Coalesces concurrent `submit` calls into pipelines: while `max_inflight` pipelines are out, new
    requests wait and leave together in the next one."""

    def __init__(
        self, redis: Redis, scripts: Scripts, timeout_s: float, *, max_inflight: int = 2, max_batch: int = 256
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._timeout_s = timeout_s
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._pending: list[tuple[IngestArgs, asyncio.Future[Result]]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._tick_scheduled = False

    async def submit(self, args: IngestArgs) -> Result:
        """Ingest one event. Raises ServiceUnavailable when Redis fails or misses the deadline."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((args, future))
        if not self._tick_scheduled:
            self._tick_scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)
        result: Result = await self._within_deadline(future)
        return result

    async def submit_many(self, batch: list[IngestArgs]) -> list[Result]:
        """Ingest a batch in one pipeline; results in order. Raises ServiceUnavailable."""
        results: list[Result] = await self._within_deadline(self._send(batch))
        return results

    async def close(self) -> None:
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        for _, future in self._pending:
            future.cancel()

    async def _within_deadline(self, work: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout_s):
                result: Any = await work
                return result
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("redis unavailable for ingest: %s", type(exc).__name__)
            raise ServiceUnavailable(
                "the queue is unavailable, retry later", retry_after_s=_RETRY_AFTER_S
            ) from None

    def _tick(self) -> None:
        self._tick_scheduled = False
        while self._pending and len(self._inflight) < self._max_inflight:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            task = asyncio.create_task(self._resolve(batch), name="ingest-pipeline")
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._pending and not self._tick_scheduled:
            self._tick_scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    async def _resolve(self, batch: list[tuple[IngestArgs, asyncio.Future[Result]]]) -> None:
        try:
            raw = await self._send_raw([args for args, _ in batch])
        except Exception as exc:  # every waiter must hear about it, whatever it was
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), item in zip(batch, raw, strict=True):
            if future.done():
                continue
            try:
                future.set_result(_result(item))
            except Exception as exc:
                future.set_exception(exc)

    async def _send(self, batch: list[IngestArgs]) -> list[Result]:
        return [_result(item) for item in await self._send_raw(batch)]

    async def _send_raw(self, batch: list[IngestArgs]) -> list[Any]:
        metrics.INGEST_BATCH.observe(len(batch))
        results = await self._pipeline(batch)
        missing = [i for i, item in enumerate(results) if isinstance(item, NoScriptError)]
        if missing:  # Redis restarted: the script did not run for these, so running them again is safe
            await self._scripts.load(self._redis)
            for i, item in zip(missing, await self._pipeline([batch[i] for i in missing]), strict=True):
                results[i] = item
        return results

    async def _pipeline(self, batch: list[IngestArgs]) -> list[Any]:
        async with self._redis.pipeline(transaction=False) as pipe:
            for args in batch:
                await self._scripts.ingest(pipe, args)
            return list(await pipe.execute(raise_on_error=False))
