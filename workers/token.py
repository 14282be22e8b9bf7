"""The WeChat access token, shared by every worker through Redis and refreshed by one process at a time.

Tokens come from /cgi-bin/stable_token. A token is refreshed `margin` before it expires (keep the margin
under WeChat's 5-minute overlap, so the refresh gets the renewed token), under a Redis lock. On 40001/
40014/42001 the token is dropped only if the stored one is the one that failed, so a fleet of workers does
not refresh once per failed call.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from gateway.core import clock, keys, metrics
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts
from workers.wechat import Answer, TokenError, WeChatClient

log = logging.getLogger(__name__)
LOCK_TTL_MS = 10_000
_WAIT_STEP_S = 0.05
_SAFETY_MS = 5_000  # never use a token in its last seconds


class TokenCache:
    def __init__(
        self,
        redis: RedisClient,
        scripts: Scripts,
        client: WeChatClient,
        appid: str,
        secret: str,
        margin_s: int,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self._client = client
        self._appid = appid
        self._secret = secret
        self._margin_ms = margin_s * 1000
        self._token: str | None = None
        self._refresh_at_ms = 0
        self._failed: str | None = None
        for result in ("ok", "error"):  # start at 0, so rate() and the alerts see the first increment
            metrics.TOKEN_REFRESHES.labels(appid, result)

    @property
    def appid(self) -> str:
        return self._appid

    async def get(self) -> str:
        """A valid token. Raises TokenError when none can be had."""
        if self._token is not None and clock.now_ms() < self._refresh_at_ms:
            return self._token
        stored = await self._stored()
        if stored is not None and clock.now_ms() < stored[1]:
            return self._remember(*stored)
        return await self._refresh(stale=stored)

    async def invalidate(self, failed_token: str) -> None:
        """WeChat rejected `failed_token`: forget it here and in Redis (only if Redis still holds it)."""
        if self._token == failed_token:
            self._token = None
        self._failed = failed_token
        await self._scripts.token_invalidate(self._redis, self._appid, failed_token)

    def _remember(self, token: str, refresh_at_ms: int) -> str:
        # a fetch that finishes after WeChat rejected its token (a refresher racing a delivery) must not
        # bring the rejected token back into this process's cache
        if token != self._failed:
            self._token, self._refresh_at_ms = token, refresh_at_ms
        return token

    async def _stored(self) -> tuple[str, int] | None:
        """(token, refresh_at_ms) from Redis, or None."""
        token, refresh_at_ms, expires_at_ms = await self._redis.hmget(
            keys.token(self._appid), ["token", "refresh_at_ms", "expires_at_ms"]
        )
        if token is None or int(str(expires_at_ms)) - _SAFETY_MS <= clock.now_ms():
            return None
        return str(token), int(str(refresh_at_ms))

    async def _refresh(self, stale: tuple[str, int] | None) -> str:
        holder = secrets.token_hex(8)
        lock = keys.token_lock(self._appid)
        if not await self._redis.set(lock, holder, nx=True, px=LOCK_TTL_MS):
            if stale is not None:  # someone else is refreshing; the stored token is still valid
                return stale[0]
            return await self._wait_for_other()
        try:
            return await self._fetch()
        finally:
            await self._scripts.delete_if(self._redis, lock, holder)

    async def _fetch(self) -> str:
        try:
            issued = await self._client.stable_token(self._appid, self._secret)
            if issued.token == self._failed:
                # WeChat still hands out the token it just rejected: make it issue a new one
                issued = await self._client.stable_token(self._appid, self._secret, force_refresh=True)
        except TokenError:
            metrics.TOKEN_REFRESHES.labels(self._appid, "error").inc()
            raise
        now_ms = clock.now_ms()
        expires_at_ms = now_ms + issued.expires_in_s * 1000
        # half the lifetime when WeChat gives less than the margin, so a short-lived token is not re-fetched
        # on every call
        refresh_at_ms = expires_at_ms - min(self._margin_ms, issued.expires_in_s * 500)
        await self._redis.hset(
            keys.token(self._appid),
            mapping={
                "token": issued.token,
                "expires_at_ms": expires_at_ms,
                "refresh_at_ms": refresh_at_ms,
            },
        )
        await self._redis.pexpireat(keys.token(self._appid), expires_at_ms)
        metrics.TOKEN_REFRESHES.labels(self._appid, "ok").inc()
        log.info("access token refreshed, valid for %d s", issued.expires_in_s, extra={"appid": self._appid})
        token = self._remember(issued.token, refresh_at_ms)
        if issued.token != self._failed:
            self._failed = None
        return token

    async def _wait_for_other(self) -> str:
        for _ in range(int(LOCK_TTL_MS / 1000 / _WAIT_STEP_S)):
            await asyncio.sleep(_WAIT_STEP_S)
            stored = await self._stored()
            if stored is not None:
                return self._remember(*stored)
        raise TokenError(Answer(transport="lock_timeout"))
