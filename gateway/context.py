"""What one gateway app holds (typed app state: `Gateway` under `GATEWAY`), and the signature checks its
handlers share."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from gateway.admission import Admission
from gateway.auth import Caller, Scope, Target, Verifier
from gateway.core import clock, keys
from gateway.core.errors import Unauthorized
from gateway.core.redis import RedisClient
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.ingest import Ingestor
from gateway.readiness import Readiness

log = logging.getLogger(__name__)


@dataclass
class Gateway:
    settings: Settings
    redis: RedisClient
    scripts: Scripts
    ingestor: Ingestor
    verifier: Verifier
    readiness: Readiness
    admission: Admission = field(init=False)
    # set when the gateway drains (SIGTERM, SIGUSR1, POST /admin/drain): /readyz answers 503 "draining"
    # while requests are still served for PUSHGW_DRAIN_GRACE_S (gateway/server.py)
    draining: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_ingest_waiting)
        self.readiness.shards = self.settings.shards

    def verify(self, request: web.Request, body: bytes) -> Caller:
        """Check the request's signature (no Redis) and that its key may call this route. Raises
        Unauthorized, or Forbidden for a key without the route's scope."""
        target = Target(request.method, request.raw_path, request.scheme, request.host, request.headers)
        return self.verifier.verify(target, body, _scope_of(request), clock.now_s())

    @asynccontextmanager
    async def remembered(self, caller: Caller, *, replay_harmless: bool) -> AsyncIterator[None]:
        """Record the caller's signature nonce for the block: the write a state-changing request asks for.

        Replay protection for PUT and DELETE (event ingestion needs none: the event-id dedup answers a
        re-sent event): a (key id, nonce) seen within the window is refused (Unauthorized) before the block
        runs. SET NX is the arbiter, so of two identical concurrent requests exactly one gets in. Enter it
        only once the body was validated and the gateway accepts work: a refused request must leave no trace,
        so that its identical re-send gets the same answer. If the block raises, the nonce is forgotten again
        and the identical retry is accepted when that cannot replay a write: Redis answered with an error (it
        wrote nothing), or replaying is harmless anyway (`replay_harmless`). A timeout after a binding or
        preferences write may have applied it, and a replay within the window could undo a later change, so
        then the nonce stays: the retry signs anew. A running-open caller has no nonce: nothing is recorded.
        """
        key = self._nonce_key(caller)
        if key is None:
            yield
            return
        if not await self.redis.set(key, "1", nx=True, ex=2 * self.settings.signature_window_s):
            raise Unauthorized("this signature was used before")
        try:
            yield
        except BaseException as exc:
            if replay_harmless or isinstance(exc, ResponseError):
                await asyncio.shield(self.forget(caller))
            raise

    async def forget(self, caller: Caller) -> None:
        """Drop the caller's recorded nonce (a request it let in was refused after all). Best effort: when
        Redis cannot be reached the record stays, and only ages out."""
        key = self._nonce_key(caller)
        if key is None:
            return
        try:
            await self.redis.delete(key)
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("could not forget a refused request's signature: %s", type(exc).__name__)

    def _nonce_key(self, caller: Caller) -> str | None:
        if caller.nonce is None:
            return None
        return keys.nonce(keys.shard_of(caller.nonce, self.settings.shards), caller.source, caller.nonce)


_ROUTE_SCOPES = {"events": Scope.EVENTS, "bindings": Scope.BINDINGS, "customers": Scope.CUSTOMERS}


def _scope_of(request: web.Request) -> Scope:
    """The scope a route needs, from its first path segment under /v1 (every signed route is there)."""
    resource = request.match_info.route.resource
    segments = resource.canonical.split("/") if resource is not None else []
    scope = _ROUTE_SCOPES.get(segments[2]) if len(segments) > 2 and segments[1] == "v1" else None
    if scope is None:
        raise RuntimeError(f"no scope for route {resource.canonical if resource else None}")
    return scope


GATEWAY = web.AppKey("gateway", Gateway)


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]
