"""What one gateway app holds (typed app state), and the checks each handler shares."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from redis.asyncio import Redis

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
from gateway.core.redis import check_durability
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.ingest import Ingestor

log = logging.getLogger(__name__)
_PATH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass
class Readiness:
    """Whether Redis keeps its promises (persistence on, no eviction), refreshed by a background check."""

    require_durable: bool
    durable: bool | None = None
    problems: list[str] = field(default_factory=list)

    async def refresh(self, redis: Redis) -> None:
        try:
            found = (await check_durability(redis)).problems
        except Exception as exc:  # CONFIG refused or Redis down: unknown is not durable
            found = [f"cannot read Redis persistence settings ({type(exc).__name__})"]
        if found != self.problems:
            level = logging.ERROR if self.require_durable else logging.WARNING
            for problem in found:
                log.log(level, "redis does not keep acknowledged events safe: %s", problem)
        self.durable, self.problems = not found, found
        metrics.REDIS_DURABLE.set(1 if self.durable else 0)

    def require_accepting(self) -> None:
        """Raises ServiceUnavailable unless Redis is known to be durable (or durability is not required)."""
        if self.require_durable and not self.durable:
            raise ServiceUnavailable("the queue is not durable right now, retry later", retry_after_s=5)


@dataclass
class Gateway:
    settings: Settings
    redis: Redis
    scripts: Scripts
    ingestor: Ingestor
    verifier: Verifier
    readiness: Readiness

    async def authenticate(self, request: web.Request, body: bytes, *, remember: bool = True) -> Caller:
        """Verify the signature; with `remember`, refuse a signature seen before (one Redis round trip).

        The single-event route passes remember=False: its ingest script does the replay check itself.
        A request without a body is not checked for replay: the signature covers only timestamp and body,
        so every bodyless request of one second carries the same signature; such requests (reads, and the
        idempotent DELETE) are bounded by the timestamp window instead."""
        caller = self.verifier.verify(request.headers, body, clock.now_s())
        if remember and body and caller.signature is not None:
            key = keys.signature(keys.shard_of(caller.signature, self.settings.shards), caller.signature)
            ttl_s = 2 * self.settings.signature_window_s
            if not await self.redis.set(key, "1", nx=True, ex=ttl_s):
                raise Unauthorized("this signature was used before")
        return caller


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
