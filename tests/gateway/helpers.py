"""Helpers of the ingress tests: raw signed calls that also return headers, the error shape, Redis state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from gateway.core import keys
from tests.support import signed_headers


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


async def send(
    session: aiohttp.ClientSession,
    url: str,
    method: str,
    path: str,
    data: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request; signed with fresh headers unless `headers` are given. The body is decoded as JSON."""
    body = raw if raw is not None else (b"" if data is None else orjson.dumps(data))
    sent = signed_headers(body, method=method, target=path) if headers is None else headers
    async with session.request(method, url + path, data=body, headers=sent) as response:
        payload = await response.read()
        decoded = orjson.loads(payload) if payload else None
        return Answer(response.status, decoded, dict(response.headers))


def assert_error(answer: Answer, status: int, code: str | None = None, field: str | None = None) -> None:
    """The answer is `status` with exactly the one error shape (and the code and field when given)."""
    assert answer.status == status, answer
    assert_error_shape(answer.body)
    error = answer.body["error"]
    if code is not None:
        assert error["code"] == code, error
    if field is not None:
        assert error.get("field") == field, error


def assert_error_shape(body: Any) -> None:
    assert isinstance(body, dict) and set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert {"code", "message"} <= set(error) <= {"code", "message", "field"}, body
    assert all(isinstance(value, str) for value in error.values()), body
    assert error["code"] and error["message"], body


def retry_after_s(answer: Answer) -> int:
    """The Retry-After header as whole seconds (>= 1), failing when it is absent or not an integer."""
    value = answer.headers.get("Retry-After")
    assert value is not None and value.isascii() and value.isdigit(), answer.headers
    assert int(value) >= 1
    return int(value)


async def stream_length(redis: Redis, shard: int = 0) -> int:
    return int(await redis.xlen(keys.stream(shard)))


async def key_count(redis: Redis) -> int:
    return int(await redis.dbsize())
