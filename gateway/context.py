"""What one gateway app holds (typed app state), and the checks each handler shares."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import orjson
from aiohttp import StreamReader, hdrs, web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError, ResponseError

from gateway import strict_json
from gateway.auth import Caller, Scope, Target, Verifier
from gateway.core import clock, keys, metrics
from gateway.core.errors import (
    BadRequest,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from gateway.core.redis import (
    UNREACHABLE,
    DataLost,
    EpochGuard,
    NotDurable,
    RedisClient,
    check_durability,
    check_epoch,
    guard_of,
    refusal,
)
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.ingest import Ingestor

log = logging.getLogger(__name__)
_PATH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass
class Readiness:
    """Whether Redis may be written to: reachable, holding the data epoch this process accepts, persistence
    on, no eviction; refreshed by a background check. No epoch, or another one, refuses ingest even where
    durability is not required, and so does a Redis in which this process has not yet seen an epoch.
    Unreachable is a state of its own: durability is then unknown (ingest is refused: it would fail anyway),
    and `pushgw_redis_durable` keeps its last value, so an outage never reads as "not durable"."""

    require_durable: bool
    durable: bool | None = None  # None: unknown (not checked yet, unreachable, or its data epoch refused)
    reachable: bool | None = None
    problems: list[str] = field(default_factory=list)
    data_lost: bool = False
    shards: int = 1
    _guard: EpochGuard | None = None

    async def refresh(self, redis: RedisClient) -> None:
        guard = self._guard = guard_of(redis)
        guard.refuse_unsafe = self.require_durable
        durable: bool | None = None
        found: list[str] = []
        lost = None
        reachable = True
        try:
            found = (await check_durability(redis)).problems
            guard.durability_problems, durable = tuple(found), not found
            lost = await check_epoch(redis, self.shards)
        except DataLost as exc:  # a new connection found no epoch, or another one
            lost = str(exc)
        except NotDurable as exc:  # a new connection found Redis unsafe
            found, durable = [str(exc)], False
        except UNREACHABLE as exc:  # a refused password (AuthenticationError) is one too: say which
            reachable = False
            found = [
                refusal(exc)
                or f"redis unreachable ({type(exc).__name__}): events are refused until it answers"
            ]
        except Exception as exc:  # CONFIG refused: unknown persistence counts as not durable
            if (refused := refusal(exc)) is not None:  # protected mode: every command answered DENIED
                reachable, found = False, [refused]
            else:
                found, durable = [f"cannot read Redis persistence settings ({type(exc).__name__})"], False
        self.durable, self.reachable, self.data_lost = durable, reachable, lost is not None
        self._record(found, lost, unreachable=not reachable)
        if durable is not None:
            metrics.REDIS_DURABLE.set(1 if durable else 0)

    def _record(self, found: list[str], lost: str | None, *, unreachable: bool) -> None:
        """Keep the check's problems, the data epoch's first; each new set is logged once (an outage as a
        warning; a refused epoch is logged by its guard)."""
        problems = [lost, *found] if lost is not None else found
        if problems != self.problems:
            for problem in found:
                if unreachable:
                    log.warning("redis check failed: %s", problem)
                else:
                    level = logging.ERROR if self.require_durable or lost else logging.WARNING
                    log.log(level, "redis does not keep acknowledged events safe: %s", problem)
        self.problems = problems

    def current_problems(self) -> list[str]:
        """The last check's problems and what a connection made since then found (a Redis restart)."""
        guard = self._guard or EpochGuard()
        fresh = ([guard.lost] if guard.lost else []) + list(guard.durability_problems)
        found = self.problems + [problem for problem in fresh if problem not in self.problems]
        return found or ["redis not checked yet"]

    def lost_data(self) -> bool:
        return self.data_lost or (self._guard is not None and self._guard.lost is not None)

    def refuses(self) -> bool:
        """Whether ingest must be refused now (see require_accepting)."""
        if self.lost_data():
            return True
        if self._guard is None or self._guard.known is None:  # no epoch seen: never write to this Redis
            return True
        if not self.require_durable:
            return False
        return not self.durable or bool(self._guard.durability_problems)

    def refusal(self) -> ServiceUnavailable | None:
        """Why ingest is refused now, as its answer (None: Redis may be written to). The one predicate of
        ingest (`require_accepting`) and /readyz: Redis holds the data epoch this process accepts and is
        known to be durable (or durability is not required); a Redis restart is judged by its first
        connection."""
        if self.lost_data():
            message = "the queue lost its data or was never initialised; an operator must check it"
            return ServiceUnavailable(message, retry_after_s=30)
        if not self.refuses():
            return None
        if self.durable is None:
            return ServiceUnavailable("the queue cannot be reached right now, retry later", retry_after_s=1)
        return ServiceUnavailable("the queue is not durable right now, retry later", retry_after_s=5)

    def require_accepting(self) -> None:
        """Raises `refusal()` when there is one."""
        if (refused := self.refusal()) is not None:
            raise refused


SHED_RECENTLY_S = 1.0


@dataclass
class Admission:
    """Bounded admission: at most `limit` ingest requests in work at once in this process; the next one is
    refused at once (503 + Retry-After) instead of queueing behind the others past its client's timeout."""

    limit: int
    waiting: int = 0
    shed_at_s: float = float("-inf")

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """Raises ServiceUnavailable when full (counted in pushgw_ingress_shed_total)."""
        if self.full:
            self.shed_at_s = time.monotonic()
            metrics.INGRESS_SHED.inc()
            raise ServiceUnavailable("the gateway is overloaded, retry later", retry_after_s=1)
        self.waiting += 1
        metrics.INGRESS_WAITING.inc()
        try:
            yield
        finally:
            self.waiting -= 1
            metrics.INGRESS_WAITING.dec()

    @property
    def full(self) -> bool:
        """Whether the next ingest request would be refused (the condition `admitted` checks)."""
        return self.waiting >= self.limit

    @property
    def shedding(self) -> bool:
        """Whether the next ingest request would be refused, or one was within the last second (what
        /readyz reports: a load balancer should send elsewhere before the next refusal, not after it)."""
        return self.full or time.monotonic() - self.shed_at_s < SHED_RECENTLY_S


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


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The raw JSON body, kept raw for the signature, complete within PUSHGW_BODY_TIMEOUT_S.

    Raises UnsupportedMediaType (415: not application/json, or any Content-Encoding but identity: bodies
    are never compressed), PayloadTooLarge (413), RequestTimeout (408: the body was late; the connection is
    then closed), BadRequest (400: its framing broke, e.g. a bad chunk) or ClientClosedRequest (499: the
    client went away). None of them repeats request bytes."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        raise UnsupportedMediaType("Content-Encoding must be identity", code="unsupported_encoding")
    if request.content_length is not None and request.content_length > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    try:
        if request.content.is_eof():  # it came with the headers (the common case): nothing to wait for
            return await _body_up_to(request.content, limit_bytes)
        async with asyncio.timeout(request.app[GATEWAY].settings.body_timeout_s):
            return await _body_up_to(request.content, limit_bytes)
    except (TimeoutError, ConnectionError, RequestPayloadError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise ClientClosedRequest("the client closed the connection mid-body") from None
        if isinstance(exc, TimeoutError):
            raise RequestTimeout("the request body did not arrive in time") from None
        raise BadRequest("the request body's framing is broken", code="malformed_body") from None


async def _body_up_to(content: StreamReader, limit_bytes: int) -> bytes:
    chunks, size = [], 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> object:
    """Raises BadRequest (invalid_json) for anything that is not one JSON document in UTF-8, or that has an
    object repeating a key, at any depth (see gateway/strict_json.py)."""
    try:
        return strict_json.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    except strict_json.DuplicateKey:
        raise BadRequest("body is not valid JSON: an object repeats a key", code="invalid_json") from None


def path_id(request: web.Request, name: str) -> str:
    """A path parameter holding an id; raises Unprocessable naming it."""
    value = request.match_info[name]
    if not _PATH_ID.fullmatch(value):
        raise Unprocessable(f"{name} must be 1 to 64 letters, digits or . _ : -", field=name)
    return value
