"""Ingress signatures: headers, HMAC over `{ts}.` + raw body, the time window, key rotation and revocation,
replays; and, as properties of the Verifier, that any change of body, timestamp or key fails and that every
comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.auth import Verifier
from gateway.core.errors import Unauthorized
from gateway.core.settings import ConfigError, RateLimit, Settings
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, fresh_headers, send, stream_length
from tests.support import KEY_ID, SECRET, Running, make_event, signed_headers

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


async def test_a_revoked_key_is_refused_at_once_and_replays_are_refused_by_every_gateway(
    stack_for: Callable[..., Any], settings_for: Callable[..., Settings], redis: Redis
) -> None:
    """Rotation ends: the gateways restart with the old key removed from PUSHGW_API_KEYS. A request signed
    with it a moment ago (inside the time window, never sent) is refused by the first restarted gateway; the
    new key goes on working; a signature one gateway accepted is refused by another (the replay check is in
    Redis, not in a process)."""
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET})
    accepted = orjson.dumps(make_event(customer_id="C-rot1"))
    accepted_headers = headers_for(accepted)
    assert (await post(stack, accepted, accepted_headers)).status == 202
    signed_before = orjson.dumps(make_event(customer_id="C-rot2"))
    signed_before_headers = headers_for(signed_before)  # with the old key, before it was revoked

    restarted = await Running(create_app(settings_for(api_keys={NEW_KEY_ID: NEW_SECRET}))).start()
    try:

        async def to_restarted(body: bytes, headers: dict[str, str]) -> Answer:
            return await send(stack.session, restarted.url, "POST", "/v1/events", raw=body, headers=headers)

        assert_error(await to_restarted(signed_before, signed_before_headers), 401, "unauthorized")
        fresh = orjson.dumps(make_event(customer_id="C-rot3"))
        assert_error(await to_restarted(fresh, headers_for(fresh)), 401, "unauthorized")
        new = orjson.dumps(make_event(customer_id="C-rot4"))
        new_headers = headers_for(new, key_id=NEW_KEY_ID, secret=NEW_SECRET)
        assert (await to_restarted(new, new_headers)).status == 202
        # the request the new gateway accepted cannot be replayed against the one still running
        assert_error(await post(stack, new, new_headers), 401, "unauthorized")
    finally:
        await restarted.stop()
    assert await stream_length(redis) == 2


# --- properties of the signature itself (the Verifier, no server) --------------------------------------

WINDOW_S = 300
NOW_S = 1_790_000_000


def _verifier() -> Verifier:
    return Verifier({KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET}, WINDOW_S, open_ingress=False)


def _signed(body: bytes, timestamp: int, key_id: str = KEY_ID, secret: str = SECRET) -> dict[str, str]:
    return {
        "X-Pushgw-Key": key_id,
        "X-Pushgw-Timestamp": str(timestamp),
        "X-Pushgw-Signature": by_hand(secret, str(timestamp), body),
    }


@st.composite
def _changed_bytes(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` with one byte changed, inserted or removed, or bytes appended or cut off."""
    how = draw(st.sampled_from(["flip", "insert", "delete", "append", "truncate"]))
    at = draw(st.integers(0, max(len(body) - 1, 0)))
    if how == "flip" and body:
        return body[:at] + bytes([body[at] ^ draw(st.integers(1, 255))]) + body[at + 1 :]
    if how == "delete" and body:
        return body[:at] + body[at + 1 :]
    if how == "truncate" and body:
        return body[:at]
    if how == "insert":
        return body[:at] + draw(st.binary(min_size=1, max_size=3)) + body[at:]
    return body + draw(st.binary(min_size=1, max_size=8))


_bodies = st.binary(max_size=300) | st.builds(lambda e: orjson.dumps(e), st.builds(make_event))


@settings(max_examples=300, deadline=None, database=None)
@given(body=_bodies, data=st.data(), skew_s=st.integers(-WINDOW_S, WINDOW_S))
def test_any_change_of_body_timestamp_or_key_fails(body: bytes, data: st.DataObject, skew_s: int) -> None:
    verifier = _verifier()
    timestamp = NOW_S + skew_s
    headers = _signed(body, timestamp)
    assert verifier.verify(headers, body, NOW_S).source == KEY_ID  # the untouched request passes

    changed = data.draw(_changed_bytes(body))
    assume(changed != body)
    with pytest.raises(Unauthorized):
        verifier.verify(headers, changed, NOW_S)
    other_ts = data.draw(st.integers(NOW_S - WINDOW_S, NOW_S + WINDOW_S).filter(lambda ts: ts != timestamp))
    with pytest.raises(Unauthorized):
        verifier.verify({**headers, "X-Pushgw-Timestamp": str(other_ts)}, body, NOW_S)
    with pytest.raises(Unauthorized):  # another live key's id with this key's signature
        verifier.verify({**headers, "X-Pushgw-Key": NEW_KEY_ID}, body, NOW_S)
    wrong_secret = data.draw(st.text(min_size=1, max_size=40).filter(lambda s: s != SECRET))
    with pytest.raises(Unauthorized):
        verifier.verify(_signed(body, timestamp, secret=wrong_secret), body, NOW_S)


@settings(max_examples=100, deadline=None, database=None)
@given(body=_bodies, skew_s=st.integers(WINDOW_S + 1, 10**9) | st.integers(-(10**9), -(WINDOW_S + 1)))
def test_a_correct_signature_outside_the_window_fails(body: bytes, skew_s: int) -> None:
    timestamp = max(NOW_S + skew_s, 0)
    with pytest.raises(Unauthorized):
        _verifier().verify(_signed(body, timestamp), body, NOW_S)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(_signed(b"{}", NOW_S), id="valid"),
        pytest.param({**_signed(b"{}", NOW_S), "X-Pushgw-Signature": "0" * 64}, id="wrong"),
        pytest.param({**_signed(b"{}", NOW_S), "X-Pushgw-Signature": "ab"}, id="short"),
        pytest.param({**_signed(b"{}", NOW_S), "X-Pushgw-Key": "nobody"}, id="unknown-key-id"),
    ],
)
def test_every_signature_is_compared_in_constant_time(
    headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison goes through hmac.compare_digest, also for an unknown key id or a signature of the
    wrong length, so the time taken tells nothing about the key ids or how much of a signature was right."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    try:
        _verifier().verify(headers, b"{}", NOW_S)
    except Unauthorized:
        pass
    assert len(compared) == 1
