"""Ingress signatures: headers, HMAC over `{ts}.` + raw body, the time window, key rotation, replays."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.core.settings import ConfigError, RateLimit
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, fresh_headers, send, stream_length
from tests.support import KEY_ID, SECRET, make_event, signed_headers

pytestmark = pytest.mark.e2e

NEW_KEY_ID, NEW_SECRET = "cbs-2027", "rotated-ingress-secret"
WRONG_SECRET = "not-the-secret"  # noqa: S105 - a fixture key


def by_hand(secret: str, timestamp: str, body: bytes) -> str:
    """DESIGN.md: lowercase hex HMAC-SHA256(secret, "{timestamp}.".encode() + raw_body)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def headers_for(
    body: bytes, *, key_id: str = KEY_ID, secret: str = SECRET, at_s: int | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time()) if at_s is None else at_s)
    return {
        "Content-Type": "application/json",
        "X-Pushgw-Key": key_id,
        "X-Pushgw-Timestamp": timestamp,
        "X-Pushgw-Signature": by_hand(secret, timestamp, body),
    }


async def post(stack: Stack, body: bytes, headers: dict[str, str], path: str = "/v1/events") -> Answer:
    return await send(stack.session, stack.client.url, "POST", path, raw=body, headers=headers)


async def test_a_signature_computed_by_hand_is_accepted(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    body = (
        b'{ "event_id":"E-hand-1",  "customer_id":"C1","account":"6222020200001234","type":"debit",'
        b'"amount":"1.00","currency":"CNY","occurred_at":"2026-11-22T10:00:00+08:00" }\n'
    )
    answer = await post(stack, body, headers_for(body))
    assert (answer.status, answer.body) == (202, {"event_id": "E-hand-1", "status": "queued"})


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda ts, body: (ts, orjson.dumps(orjson.loads(body))), id="signed-reserialised-body"),
        pytest.param(lambda ts, body: (ts, body.strip()), id="signed-without-trailing-newline"),
        pytest.param(lambda ts, body: ("", ts.encode() + body), id="signed-without-the-dot"),
        pytest.param(lambda ts, body: (str(int(ts) + 1), body), id="signed-other-timestamp"),
    ],
)
async def test_the_signature_covers_the_exact_raw_bytes(
    stack_for: Callable[..., Any], redis: Redis, tamper: Callable[[str, bytes], tuple[str, bytes]]
) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event(), option=orjson.OPT_INDENT_2) + b"\n"
    headers = headers_for(body)
    timestamp, signed_bytes = tamper(headers["X-Pushgw-Timestamp"], body)
    if timestamp:
        headers["X-Pushgw-Signature"] = by_hand(SECRET, timestamp, signed_bytes)
    else:
        headers["X-Pushgw-Signature"] = hmac.new(SECRET.encode(), signed_bytes, hashlib.sha256).hexdigest()
    assert_error(await post(stack, body, headers), 401, "unauthorized")
    assert await stream_length(redis) == 0


async def test_uppercase_hex_is_the_same_signature(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event(customer_id="C-upper"))
    headers = headers_for(body)
    headers["X-Pushgw-Signature"] = headers["X-Pushgw-Signature"].upper()
    assert (await post(stack, body, headers)).status == 202


def _drop(name: str) -> Callable[[dict[str, str]], None]:
    def change(headers: dict[str, str]) -> None:
        del headers[name]

    return change


def _set(name: str, value: str) -> Callable[[dict[str, str]], None]:
    def change(headers: dict[str, str]) -> None:
        headers[name] = value

    return change


BAD_HEADERS = [
    pytest.param(_drop("X-Pushgw-Key"), id="no-key"),
    pytest.param(_drop("X-Pushgw-Timestamp"), id="no-timestamp"),
    pytest.param(_drop("X-Pushgw-Signature"), id="no-signature"),
    pytest.param(_set("X-Pushgw-Key", ""), id="empty-key"),
    pytest.param(_set("X-Pushgw-Key", "nobody"), id="unknown-key-id"),
    pytest.param(_set("X-Pushgw-Signature", "0" * 64), id="wrong-signature"),
    pytest.param(_set("X-Pushgw-Signature", "zz"), id="not-hex"),
    pytest.param(_set("X-Pushgw-Signature", "é" * 64), id="non-ascii-signature"),
    pytest.param(_set("X-Pushgw-Timestamp", "12.5"), id="fractional-timestamp"),
    pytest.param(_set("X-Pushgw-Timestamp", "-1"), id="negative-timestamp"),
    pytest.param(_set("X-Pushgw-Timestamp", "9" * 40), id="huge-timestamp"),
    pytest.param(_set("X-Pushgw-Timestamp", "²³"), id="superscript-digits"),
    pytest.param(_set("X-Pushgw-Timestamp", "١٧٠٠٠٠٠٠٠٠"), id="arabic-indic-digits"),
]


@pytest.mark.parametrize("change", BAD_HEADERS)
@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_missing_or_bad_signature_headers_are_401(
    stack_for: Callable[..., Any], redis: Redis, change: Callable[[dict[str, str]], None], path: str
) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    body = orjson.dumps(event if path == "/v1/events" else {"events": [event]})
    headers = headers_for(body)
    change(headers)
    assert_error(await post(stack, body, headers, path), 401, "unauthorized")
    assert await stream_length(redis) == 0


@pytest.mark.parametrize("skew_s", [-301, 301, -3600, 10**9])
async def test_timestamp_outside_the_window_is_401(
    stack_for: Callable[..., Any], redis: Redis, skew_s: int
) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event())
    answer = await post(stack, body, headers_for(body, at_s=int(time.time()) + skew_s))
    assert_error(answer, 401, "unauthorized")
    assert await stream_length(redis) == 0


@pytest.mark.parametrize("skew_s", [-250, 250])
async def test_timestamp_inside_the_window_is_accepted(stack_for: Callable[..., Any], skew_s: int) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event(customer_id=f"C-skew{skew_s}"))
    assert (await post(stack, body, headers_for(body, at_s=int(time.time()) + skew_s))).status == 202


async def test_two_live_keys_during_rotation_are_both_accepted(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET})
    old = orjson.dumps(make_event(customer_id="C-old"))
    new = orjson.dumps(make_event(customer_id="C-new"))
    assert (await post(stack, old, headers_for(old))).status == 202
    assert (await post(stack, new, headers_for(new, key_id=NEW_KEY_ID, secret=NEW_SECRET))).status == 202
    crossed = orjson.dumps(make_event(customer_id="C-crossed"))
    answer = await post(stack, crossed, headers_for(crossed, key_id=NEW_KEY_ID, secret=SECRET))
    assert_error(answer, 401, "unauthorized")
    assert await stream_length(redis) == 2


async def test_a_replayed_signed_event_is_401_and_queued_once(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps(make_event())
    headers = headers_for(body)
    assert (await post(stack, body, headers)).status == 202
    assert_error(await post(stack, body, headers), 401, "unauthorized")
    assert await stream_length(redis) == 1


async def test_a_replayed_signed_batch_is_401_and_queued_once(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps({"events": [make_event(customer_id="C-b1"), make_event(customer_id="C-b2")]})
    headers = headers_for(body)
    assert (await post(stack, body, headers, "/v1/events/batch")).status == 200
    assert_error(await post(stack, body, headers, "/v1/events/batch"), 401, "unauthorized")
    assert await stream_length(redis) == 2


async def test_a_replayed_binding_change_is_401(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0)
    body = orjson.dumps({"openid": "oUser_replay1"})
    headers = headers_for(body)
    url = stack.client.url
    assert (
        await send(stack.session, url, "PUT", "/v1/bindings/C-r", raw=body, headers=headers)
    ).status == 200
    await redis.delete("pushgw:binding:{C-r}")
    again = await send(stack.session, url, "PUT", "/v1/bindings/C-r", raw=body, headers=headers)
    assert_error(again, 401, "unauthorized")
    assert not await redis.exists("pushgw:binding:{C-r}")


async def test_a_rate_limited_request_may_be_retried_with_the_same_signature(
    stack_for: Callable[..., Any],
) -> None:
    stack: Stack = await stack_for(workers=0, rate_limit=RateLimit(1, 60), rate_policy="reject")
    first = orjson.dumps(make_event(customer_id="C-rl"))
    assert (await post(stack, first, headers_for(first))).status == 202
    second = orjson.dumps(make_event(customer_id="C-rl"))
    headers = headers_for(second)
    assert (await post(stack, second, headers)).status == 429
    assert (await post(stack, second, headers)).status == 429, "a 429 must not burn the signature"


async def test_the_gateway_refuses_to_start_without_keys(settings_for: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match="PUSHGW_API_KEYS"):
        create_app(settings_for(api_keys={}))


async def test_open_ingress_accepts_unsigned_requests(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0, api_keys={}, open_ingress=True)
    event = make_event()
    body = orjson.dumps(event)
    answer = await post(stack, body, {"Content-Type": "application/json"})
    assert (answer.status, answer.body) == (202, {"event_id": event["event_id"], "status": "queued"})
    lookup = await send(stack.session, stack.client.url, "GET", f"/v1/events/{event['event_id']}", headers={})
    assert lookup.status == 200 and lookup.body["status"] == "queued"
    assert await stream_length(redis) == 1


async def test_open_ingress_still_checks_a_signature_that_is_sent(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0, open_ingress=True)
    body = orjson.dumps(make_event())
    headers = signed_headers(body, secret=WRONG_SECRET)
    assert_error(await post(stack, body, headers), 401, "unauthorized")
    assert (await post(stack, body, fresh_headers(body))).status == 202
