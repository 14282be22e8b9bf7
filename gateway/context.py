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
from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from gateway.auth import Caller, Verifier
from gateway.core import clock, keys, metrics
from gateway.core.errors import (
    BadRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from gateway.core.redis import (
    DataLost,
    EpochGuard,
    NotDurable,
    RedisClient,
    check_durability,
    check_epoch,
    guard_of,
)
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.ingest import Ingestor

log = logging.getLogger(__name__)
_PATH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass
class Readiness:
    """Whether Redis keeps its promises (persistence on, no eviction, the data epoch this process knew),
    refreshed by a background check. A lost epoch refuses ingest even where durability is not required."""

    require_durable: bool
    durable: bool | None = None
    problems: list[str] = field(default_factory=list)
    data_lost: bool = False
    shards: int = 1
    _guard: EpochGuard | None = None

    async def refresh(self, redis: RedisClient) -> None:
        self._guard = guard_of(redis)
        self._guard.refuse_unsafe = self.require_durable
        lost = None
        try:
            found = (await check_durability(redis)).problems
            self._guard.durability_problems = tuple(found)
            lost = await check_epoch(redis, self.shards)
        except DataLost as exc:  # a new connection found the epoch gone
            found, lost = [], str(exc)
        except NotDurable as exc:  # a new connection found Redis unsafe
            found = [str(exc)]
        except Exception as exc:  # CONFIG refused or Redis down: unknown is not durable
            found = [f"cannot read Redis persistence settings ({type(exc).__name__})"]
        if lost is not None:
            found = [lost, *found]
        if found != self.problems:
            level = logging.ERROR if self.require_durable or lost else logging.WARNING
            for problem in found:
                log.log(level, "redis does not keep acknowledged events safe: %s", problem)
        self.durable, self.problems, self.data_lost = not found, found, lost is not None
        metrics.REDIS_DURABLE.set(1 if self.durable else 0)

    def current_problems(self) -> list[str]:
        """The last check's problems and what a connection made since then found (a Redis restart)."""
        guard = self._guard
        if guard is None:
            return self.problems
        fresh = ([guard.lost] if guard.lost else []) + list(guard.durability_problems)
        return self.problems + [problem for problem in fresh if problem not in self.problems]

    def lost_data(self) -> bool:
        return self.data_lost or (self._guard is not None and self._guard.lost is not None)

    def refuses(self) -> bool:
        """Whether ingest must be refused now (see require_accepting)."""
        if self.lost_data():
            return True
        if not self.require_durable:
            return False
        return not self.durable or bool(self._guard is not None and self._guard.durability_problems)

    def require_accepting(self) -> None:
        """Raises ServiceUnavailable unless Redis is known to be durable (or durability is not required)
        and holds the data epoch this process knew; a Redis restart is judged by its first connection."""
        if self.lost_data():
            raise ServiceUnavailable("the queue lost its data; an operator must check it", retry_after_s=30)
        if self.refuses():
            raise ServiceUnavailable("the queue is not durable right now, retry later", retry_after_s=5)


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
        if self.waiting >= self.limit:
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
    def shedding(self) -> bool:
        """Whether a request was refused within the last second (what /readyz reports)."""
        return time.monotonic() - self.shed_at_s < SHED_RECENTLY_S


@dataclass
class Gateway:
    settings: Settings
    redis: RedisClient
    scripts: Scripts
    ingestor: Ingestor
    verifier: Verifier
    readiness: Readiness
    admission: Admission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.settings.max_ingest_waiting)
        self.readiness.shards = self.settings.shards

    def verify(self, request: web.Request, body: bytes) -> Caller:
        """Check the request's signature: key, timestamp window and HMAC (no Redis). Raises Unauthorized.

        This is all a read or the idempotent DELETE gets: without a body the signature covers only the
        timestamp, so every bodyless request of one second carries the same signature; those requests are
        bounded by the timestamp window instead of a replay check."""
        return self.verifier.verify(request.headers, body, clock.now_s())

    @asynccontextmanager
    async def remembered(self, caller: Caller, *, replay_harmless: bool) -> AsyncIterator[None]:
        """Record the caller's signature for the block, the write a signed body asks for.

        Replay protection for a write: a signature seen before is refused (Unauthorized) before the
        block runs. SET NX is the arbiter, so of two identical concurrent requests exactly one gets in.
        Enter it only once the body was validated and the gateway accepts work: a refused request must
        leave no trace, so that its identical re-send gets the same answer. If the block raises, the
        signature is forgotten again and the identical retry is accepted when that cannot replay a write:
        Redis answered with an error (it wrote nothing), or replaying is harmless anyway (`replay_harmless`:
        events are deduplicated). A timeout after a binding or preferences write may have applied it, and a
        replay within the window could undo a later change, so then the signature stays: the retry signs
        anew. A running-open caller has no signature and nothing is recorded. The single-event route does
        not use this: its ingest script checks and records the signature in the same atomic step.
        """
        key = self._signature_key(caller)
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
        """Drop the caller's recorded signature (a request it let in was refused after all). Best effort:
        when Redis cannot be reached the record stays, and only ages out."""
        key = self._signature_key(caller)
        if key is None:
            return
        try:
            await self.redis.delete(key)
        except (RedisError, TimeoutError, OSError) as exc:
            log.warning("could not forget a refused request's signature: %s", type(exc).__name__)

    def _signature_key(self, caller: Caller) -> str | None:
        if caller.signature is None:
            return None
        return keys.signature(keys.shard_of(caller.signature, self.settings.shards), caller.signature)


GATEWAY = web.AppKey("gateway", Gateway)


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The raw JSON body, kept raw for the signature. Raises 415 or 413."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    if request.content_length is not None and request.content_length > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    body = await request.read()
    if len(body) > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    return body


def decode_json(body: bytes) -> object:
    """Raises BadRequest for anything that is not one JSON document in UTF-8."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None


def path_id(request: web.Request, name: str) -> str:
    """A path parameter holding an id; raises Unprocessable naming it."""
    value = request.match_info[name]
    if not _PATH_ID.fullmatch(value):
        raise Unprocessable(f"{name} must be 1 to 64 letters, digits or . _ : -", field=name)
    return value
