"""GET /v1/events/{event_id} and PUT|GET|DELETE /v1/bindings/{customer_id}."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.core import keys
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, key_count, send
from tests.support import KEY_ID, SECRET, make_event, signed_headers

pytestmark = pytest.mark.e2e

OTHER_KEY_ID, OTHER_SECRET = "cards", "cards-ingress-secret"


async def call(stack: Stack, method: str, path: str, data: Any = None, **kwargs: Any) -> Answer:
    return await send(stack.session, stack.client.url, method, path, data, **kwargs)


async def test_an_unknown_event_is_404(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    assert_error(await call(stack, "GET", "/v1/events/CBS-unknown"), 404, "not_found", "event_id")


@pytest.mark.parametrize("event_id", ["-dash", "a" * 65, "with%20space", "%C3%A9", "a%2Fb"])
async def test_an_invalid_event_id_in_the_path_is_422(stack_for: Callable[..., Any], event_id: str) -> None:
    stack: Stack = await stack_for(workers=0)
    assert_error(await call(stack, "GET", f"/v1/events/{event_id}"), 422, "invalid_field", "event_id")


async def test_a_queued_event_shows_its_lifecycle(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    assert (await stack.client.post_event(event))[0] == 202
    answer = await call(stack, "GET", f"/v1/events/{event['event_id']}")
    assert answer.status == 200
    view = answer.body
    assert view["event_id"] == event["event_id"]
    assert (view["status"], view["attempts"], view["last_error"], view["delivered_at"]) == (
        "queued",
        0,
        None,
        None,
    )
    accepted = datetime.fromisoformat(view["accepted_at"])
    assert abs(accepted.timestamp() - time.time()) < timedelta(minutes=5).total_seconds()
    assert view["updated_at"] == view["accepted_at"]
    assert "account" not in view and event["account"] not in str(view)


async def test_events_are_looked_up_within_the_callers_source(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, OTHER_KEY_ID: OTHER_SECRET})
    event = make_event()
    assert (await stack.client.post_event(event))[0] == 202
    other = await call(
        stack,
        "GET",
        f"/v1/events/{event['event_id']}",
        headers=signed_headers(
            b"",
            method="GET",
            target=f"/v1/events/{event['event_id']}",
            key_id=OTHER_KEY_ID,
            secret=OTHER_SECRET,
        ),
    )
    assert_error(other, 404, "not_found")


async def test_a_lookup_needs_a_signature(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    answer = await call(stack, "GET", "/v1/events/E1", headers={})
    assert_error(answer, 401, "unauthorized")


async def test_binding_put_get_delete(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0)
    put = await call(stack, "PUT", "/v1/bindings/C-bind", {"openid": "oUser_bind01", "appid": "wx_test_app"})
    expected = {"customer_id": "C-bind", "openid": "oUser_bind01", "appid": "wx_test_app", "status": "active"}
    assert (put.status, put.body) == (200, expected)
    assert (await call(stack, "GET", "/v1/bindings/C-bind")).body == expected
    again = await call(stack, "PUT", "/v1/bindings/C-bind", {"openid": "oUser_bind02"})
    assert again.body == {"customer_id": "C-bind", "openid": "oUser_bind02", "status": "active"}
    assert "appid" not in await redis.hgetall(keys.binding("C-bind"))
    deleted = await call(stack, "DELETE", "/v1/bindings/C-bind")
    assert (deleted.status, deleted.body) == (204, None)
    assert_error(await call(stack, "GET", "/v1/bindings/C-bind"), 404, "not_found", "customer_id")
    assert_error(await call(stack, "DELETE", "/v1/bindings/C-bind"), 404, "not_found", "customer_id")


@pytest.mark.parametrize(
    ("data", "code", "field"),
    [
        ({}, "missing_field", "openid"),
        ({"openid": None}, "missing_field", "openid"),
        ({"openid": "short"}, "invalid_field", "openid"),
        ({"openid": "o" * 65}, "invalid_field", "openid"),
        ({"openid": "has space!"}, "invalid_field", "openid"),
        ({"openid": 123456789}, "invalid_field", "openid"),
        ({"openid": "oUser_ok0001", "appid": "not-wx"}, "invalid_field", "appid"),
        ({"openid": "oUser_ok0001", "appid": 7}, "invalid_field", "appid"),
        ({"openid": "oUser_ok0001", "nickname": "x"}, "unknown_field", "nickname"),
        (["oUser_ok0001"], "invalid_field", ""),
    ],
)
async def test_binding_validation(
    stack_for: Callable[..., Any], redis: Redis, data: Any, code: str, field: str
) -> None:
    stack: Stack = await stack_for(workers=0)
    before = await key_count(redis)
    assert_error(await call(stack, "PUT", "/v1/bindings/C-bad", data), 422, code, field)
    assert not await redis.exists(keys.binding("C-bad"))
    assert await key_count(redis) - before <= 1  # at most the request's replay-protection signature


@pytest.mark.parametrize("method", ["PUT", "GET", "DELETE"])
async def test_binding_with_an_invalid_customer_id_is_422(stack_for: Callable[..., Any], method: str) -> None:
    stack: Stack = await stack_for(workers=0)
    data = {"openid": "oUser_ok0001"} if method == "PUT" else None
    answer = await call(stack, method, "/v1/bindings/bad%20id", data)
    assert_error(answer, 422, "invalid_field", "customer_id")


async def test_binding_put_needs_json(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    body = b"openid=oUser_ok0001"
    assert_error(await call(stack, "PUT", "/v1/bindings/C1", raw=body), 400, "invalid_json")
    headers = {
        **signed_headers(body, method="PUT", target="/v1/bindings/C1"),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    assert_error(await call(stack, "PUT", "/v1/bindings/C1", raw=body, headers=headers), 415)
