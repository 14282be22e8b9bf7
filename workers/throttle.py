"""The global outbound rate limit: at most N template sends a second per appid, across every worker.

Workers take permits of the current second from Redis in small batches (one round trip per batch, not per
send); a worker that finds the second used up waits for the next one. Permits left unused when a second
ends are lost, so the real rate stays at or under the limit, never over it. A worker takes a permit just
before its send, with the token in hand, and stops using a second's permits shortly before that second
ends, so a send still on its way is not counted in the next second by a WeChat that shares our clock.
"""

from __future__ import annotations

import asyncio
import time

from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts

BATCHES_PER_SECOND = 20  # a worker takes at most 1/20 of a second's permits at once
SEND_GUARD_S = 0.05  # permits are not used in a second's last 50 ms: the send would reach WeChat in the next


class Throttle:
    def __init__(self, redis: RedisClient, scripts: Scripts, appid: str, per_second: int) -> None:
        self._redis = redis
        self._scripts = scripts
        self._appid = appid
        self._per_second = per_second
        self._batch = max(1, per_second // BATCHES_PER_SECOND)
        self._permits = 0
        self._valid_until = 0.0  # monotonic time the permits stop being used (their second ends soon after)
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for one permit (at once when there is no limit). Raises RedisError."""
        if not self._per_second:
            return
        async with self._lock:
            while True:
                if self._permits and time.monotonic() < self._valid_until:
                    self._permits -= 1
                    return
                asked_at = time.monotonic()  # before Redis read its clock: the second ends no sooner
                granted, left_ms = await self._scripts.throttle(
                    self._redis, self._appid, self._per_second, self._batch
                )
                valid_until = asked_at + left_ms / 1000 - SEND_GUARD_S
                if granted and time.monotonic() < valid_until:
                    self._permits, self._valid_until = granted - 1, valid_until
                    return
                await asyncio.sleep(left_ms / 1000)
