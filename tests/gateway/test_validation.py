"""POST /v1/events validation: one case per rule, the one error shape, and bad input changing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, key_count, send, stream_length
from tests.support import make_event, signed_headers

pytestmark = pytest.mark.e2e

REQUIRED = ["event_id", "customer_id", "account", "type", "amount", "currency", "occurred_at"]


@pytest.fixture
async def stack(stack_for: Callable[..., Any], redis: Redis) -> AsyncIterator[Stack]:
    """A gateway without workers; after the test, Redis must hold nothing at all (bad input only)."""
    built: Stack = await stack_for(workers=0, max_body_bytes=4096)
    before = await key_count(redis)
    yield built
    assert await key_count(redis) == before
    assert await stream_length(redis) == 0


async def post(stack: Stack, path: str = "/v1/events", data: Any = None, **kwargs: Any) -> Answer:
    return await send(stack.session, stack.client.url, "POST", path, data, **kwargs)


@pytest.mark.parametrize("name", REQUIRED)
async def test_each_required_field_missing_is_named(stack: Stack, name: str) -> None:
    assert_error(await post(stack, data=make_event(**{name: None})), 422, "missing_field", name)


@pytest.mark.parametrize("name", ["extra", "Event_ID", "account_number", "x" * 100])
async def test_unknown_field_is_named(stack: Stack, name: str) -> None:
    answer = await post(stack, data={**make_event(), name: "1"})
    assert_error(answer, 422, "unknown_field", name[:64])


INVALID: list[tuple[str, Any]] = [
    ("event_id", ""),
    ("event_id", "has space"),
    ("event_id", "-starts-with-dash"),
    ("event_id", "ünïcode"),
    ("event_id", "a" * 65),
    ("event_id", 12345),
    ("event_id", None),
    ("customer_id", "C/1"),
    ("customer_id", ""),
    ("account", "6222-0202-0000-1234"),
    ("account", "1234567"),
    ("account", "1" * 33),
    ("account", 6222020200001234),
    ("account", "６２２２０２０２"),
    ("type", "withdrawal"),
    ("type", "DEBIT"),
    ("type", 1),
    ("amount", 12.5),
    ("amount", 12),
    ("amount", "-1.00"),
    ("amount", "0"),
    ("amount", "0.00"),
    ("amount", "1.234"),
    ("amount", "01.00"),
    ("amount", "1e3"),
    ("amount", " 1.00"),
    ("amount", "NaN"),
    ("amount", "1" * 16),
    ("amount", "1٣.00"),
    ("amount", "999999999999999.99"),  # more digits than a WeChat amount value shows: render would refuse it
    ("amount", "10000000000"),
    ("balance", "0.٣"),
    ("currency", "cny"),
    ("currency", "RMB"),
    ("currency", ""),
    ("currency", ["CNY"]),
    ("occurred_at", "2026-11-22T10:00:00"),
    ("occurred_at", "2026-11-22"),
    ("occurred_at", "yesterday"),
    ("occurred_at", "2026-13-40T10:00:00+08:00"),
    ("occurred_at", 1763776800),
    ("occurred_at", "2026-11-22T10:00:00+08:00" + " " * 30),
    ("occurred_at", "9999-12-31T23:59:59-23:59"),  # overflows when shown in the customer's zone
    ("occurred_at", "0001-01-01T00:00:00+14:00"),
    ("occurred_at", "1969-12-31T23:59:59+00:00"),
    ("balance", 5678.9),
    ("balance", "5,678.90"),
    ("balance", "1.001"),
    ("balance", "--1"),
    ("counterparty", "x" * 65),
    ("counterparty", "line\nbreak"),
    ("counterparty", "nul\x00"),
    ("counterparty", "   "),
    ("counterparty", "\u200b\u2060\u202e"),  # nothing visible once invisible characters are removed
    ("counterparty", 7),
    ("channel", "c" * 33),
    ("channel", "tab\there"),
    ("channel", ""),
    ("priority", "urgent"),
    ("priority", True),
    ("fallback", "email"),
    ("fallback", 0),
]


@pytest.mark.parametrize(("name", "value"), INVALID, ids=[f"{n}={v!r}"[:40] for n, v in INVALID])
async def test_each_malformed_field_is_named(stack: Stack, name: str, value: Any) -> None:
    event = make_event()
    event[name] = value  # None stays in the body as JSON null
    assert_error(await post(stack, data=event), 422, "invalid_field", name)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"not json", 400),
        (b'{"event_id": ', 400),
        (b'{"a": "\xff\xfe"}', 400),
        (b"\xef\xbb\xbf{}", 400),
        (b'{"a": 1} {"b": 2}', 400),
        (b"[1, 2, 3]", 422),
        (b"[]", 422),
        (b'"a string"', 422),
        (b"null", 422),
        (b"42", 422),
        (b"[" * 1500 + b"]" * 1500, 400),
        (b'{"a":' * 600 + b"1" + b"}" * 600, 422),
        (b'{"event_id": {"nested": [[[[[]]]]]}}', 422),
    ],
)
async def test_bodies_that_are_not_one_event_object(stack: Stack, body: bytes, status: int) -> None:
    assert_error(await post(stack, raw=body), status)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(stack: Stack, content_type: str | None) -> None:
    body = orjson.dumps(make_event())
    headers = signed_headers(body)
    if content_type is None:
        del headers["Content-Type"]
    else:
        headers["Content-Type"] = content_type
    assert_error(await post(stack, raw=body, headers=headers), 415, "unsupported_media_type")


async def test_json_content_type_with_charset_is_accepted(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event())
    headers = {**signed_headers(body), "Content-Type": "application/json; charset=utf-8"}
    answer = await send(stack.session, stack.client.url, "POST", "/v1/events", raw=body, headers=headers)
    assert answer.status == 202


@pytest.mark.parametrize("path", ["/v1/events", "/v1/bindings/C1"])
async def test_body_over_the_limit_is_413(stack: Stack, path: str) -> None:
    event = make_event(counterparty="x")
    body = orjson.dumps(event) + b" " * 4096
    method = "PUT" if "bindings" in path else "POST"
    answer = await send(stack.session, stack.client.url, method, path, raw=body)
    assert_error(answer, 413, "payload_too_large")


async def test_body_over_the_limit_without_content_length_is_413(stack: Stack) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1024

    headers = signed_headers(b"")
    async with stack.session.post(stack.client.url + "/v1/events", data=chunks(), headers=headers) as resp:
        answer = Answer(resp.status, orjson.loads(await resp.read()), dict(resp.headers))
    assert_error(answer, 413, "payload_too_large")


async def test_batch_body_over_the_batch_limit_is_413(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0, max_batch_body_bytes=8192)
    body = orjson.dumps({"events": [make_event(customer_id=f"C{i}") for i in range(40)]})
    assert len(body) > 8192
    answer = await send(stack.session, stack.client.url, "POST", "/v1/events/batch", raw=body)
    assert_error(answer, 413, "payload_too_large")
    assert await stream_length(redis) == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/v1/event"), ("GET", "/v1/events/a/b"), ("POST", "/v2/events")],
)
async def test_unknown_route_is_404_in_the_error_shape(stack: Stack, method: str, path: str) -> None:
    assert_error(await send(stack.session, stack.client.url, method, path), 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/events"),
        ("GET", "/v1/events"),
        ("DELETE", "/v1/events/batch"),
        ("POST", "/v1/events/E1"),
        ("POST", "/v1/bindings/C1"),
        ("POST", "/healthz"),
    ],
)
async def test_wrong_method_is_405_in_the_error_shape(stack: Stack, method: str, path: str) -> None:
    answer = await send(stack.session, stack.client.url, method, path)
    assert_error(answer, 405, "method_not_allowed")
    assert answer.headers.get("Allow"), "a 405 names the allowed methods (RFC 9110)"
