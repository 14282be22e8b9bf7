"""Share Redis round trips between concurrent callers: what they submit leaves together in pipelines.

Each caller still gets its own results, only after Redis answered; a round trip that outlives `deadline_s`
fails with TimeoutError for all of its callers. While `max_inflight` pipelines are out, new submissions
wait and leave together in the next one, so the batch size follows the load.

On a Redis Cluster the pipeline is redis-py's ClusterPipeline: it sends each command to the node owning its
keys' slot (one round trip per node, concurrently). With `wait_replicas`, every pipeline ends with
`WAIT wait_replicas timeout` on each node it may have written to, so its callers hear success only once
that many replicas hold their writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, RedisError

from gateway.core.redis import AnyPipeline, RedisClient, deadline

T = TypeVar("T")
Split = Callable[[list[Any]], list[list[Any]]]
"""Turns a round trip's replies (in the order the commands were queued) into each item's replies."""
Queue = Callable[[AnyPipeline, list[T]], Awaitable[Split]]
"""Queues the commands of a batch of items on the pipeline (items may share a command) and returns how
their replies split into each item's."""


def each(queue_item: Callable[[AnyPipeline, T], Awaitable[int]]) -> Queue[T]:
    """The Queue of items that each queue commands of their own: `queue_item` returns how many."""

    async def queue(pipe: AnyPipeline, items: list[T]) -> Split:
        counts = [await queue_item(pipe, item) for item in items]

        def split(replies: list[Any]) -> list[list[Any]]:
            results, start = [], 0
            for count in counts:
                results.append(replies[start : start + count])
                start += count
            return results

        return split

    return queue


class NotReplicated(RedisError):
    """WAIT saw fewer replicas than required hold the writes within its timeout. The writes are on the
    primary (a retry of the same event is answered `duplicate`), but not yet safe from its failure."""


class Coalescer(Generic[T]):
    def __init__(
        self,
        redis: RedisClient,
        queue: Queue[T],
        reload_scripts: Callable[[RedisClient], Awaitable[None]],
        *,
        deadline_s: float,
        max_inflight: int = 2,
        max_batch: int = 256,
        observe: Callable[[int], None] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 0,
    ) -> None:
        self._redis = redis
        self._queue = queue
        self._reload_scripts = reload_scripts
        self._deadline_s = deadline_s
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._observe = observe
        self._wait = (wait_replicas, wait_timeout_ms)
        self._pending: list[tuple[T, asyncio.Future[list[Any]]]] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._tick_scheduled = False

    async def submit(self, item: T) -> list[Any]:
        """The results of the item's commands (a command's error is returned in its place, not raised).
        Raises what the round trip raised (connection loss, timeout)."""
        return await self.enqueue(item)

    def enqueue(self, item: T) -> asyncio.Future[list[Any]]:
        """Queue the item for the next round trip; the future gets what `submit` returns. The item is sent
        even if nobody waits for the future any more (shield it to record an outcome whatever happens)."""
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._schedule()
        return future

    async def submit_many(self, items: list[T]) -> list[list[Any]]:
        """Send these items together in one pipeline of their own; results in order."""
        return await self._send(items)

    async def close(self) -> None:
        """Send what is pending and wait for every pipeline out (callers bound this with their deadline)."""
        while self._pending or self._inflight:
            self._tick()
            if self._inflight:
                await asyncio.wait(set(self._inflight))

    def _schedule(self) -> None:
        if not self._tick_scheduled:
            self._tick_scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._tick_scheduled = False
        while self._pending and len(self._inflight) < self._max_inflight:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
            task = asyncio.create_task(self._resolve(batch), name="redis-pipeline")
            self._inflight.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if self._pending:
            self._schedule()

    async def _resolve(self, batch: list[tuple[T, asyncio.Future[list[Any]]]]) -> None:
        try:
            results = await self._send([item for item, _ in batch])
        except Exception as exc:  # every waiter must hear about it, whatever it was
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _send(self, items: list[T]) -> list[list[Any]]:
        if self._observe is not None:
            self._observe(len(items))
        results = await self._pipeline(items)
        missing = [i for i, result in enumerate(results) if any(isinstance(r, NoScriptError) for r in result)]
        if missing:  # Redis restarted and lost its scripts: they did not run, so running them again is safe
            await self._reload_scripts(self._redis)
            for i, result in zip(missing, await self._pipeline([items[i] for i in missing]), strict=True):
                results[i] = result
        return results

    async def _pipeline(self, items: list[T]) -> list[list[Any]]:
        async with self._redis.pipeline(transaction=False) as pipe:
            split = await self._queue(pipe, items)
            waits = self._queue_waits(pipe)
            async with deadline(self._deadline_s):
                flat = list(await pipe.execute(raise_on_error=False))
        if waits:
            self._check_waits(flat[-waits:])
            del flat[-waits:]
        return split(flat)

    def _queue_waits(self, pipe: AnyPipeline) -> int:
        """Queue WAIT after the items (on a cluster once per primary: WAIT counts the replicas holding this
        connection's writes, and each node's commands share one connection). Returns how many."""
        replicas, timeout_ms = self._wait
        if not replicas:
            return 0
        if not isinstance(self._redis, RedisCluster):
            pipe.execute_command("WAIT", replicas, timeout_ms)
            return 1
        primaries = self._redis.get_primaries()
        for node in primaries:
            pipe.execute_command("WAIT", replicas, timeout_ms, target_nodes=node)
        return len(primaries)

    def _check_waits(self, answers: list[Any]) -> None:
        replicas = self._wait[0]
        for answer in answers:
            if isinstance(answer, Exception):
                raise answer
            if int(answer) < replicas:
                raise NotReplicated(f"{answer} of {replicas} replicas acknowledged the writes in time")
