"""Idempotency on event_id (scoped by source): duplicates answer 200, conflicts 422, races queue once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, send, stream_length
from tests.support import KEY_ID, SECRET, make_event, signed_headers

pytestmark = pytest.mark.e2e

OTHER_KEY_ID, OTHER_SECRET = "cards", "cards-ingress-secret"


async def post_raw(stack: Stack, body: bytes, **sign: Any) -> Answer:
    return await send(
        stack.session, stack.client.url, "POST", "/v1/events", raw=body, headers=signed_headers(body, **sign)
    )


async def test_same_id_same_body_is_a_duplicate_with_the_first_answer(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    body = orjson.dumps(event)
    now = int(time.time())
    first = await post_raw(stack, body, at_s=now)
    again = await post_raw(stack, body, at_s=now - 1)  # the client's retry: new timestamp, new signature
    assert (first.status, first.body) == (202, {"event_id": event["event_id"], "status": "queued"})
    assert (again.status, again.body) == (200, {"event_id": event["event_id"], "status": "duplicate"})
    assert await stream_length(redis) == 1


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(lambda e: orjson.dumps(dict(reversed(list(e.items())))), id="key-order"),
        pytest.param(lambda e: orjson.dumps(e, option=orjson.OPT_INDENT_2) + b"\n\n", id="whitespace"),
        pytest.param(lambda e: orjson.dumps({**e, "priority": "normal"}), id="explicit-default-priority"),
        pytest.param(lambda e: orjson.dumps({**e, "fallback": None}), id="optional-null"),
    ],
)
async def test_the_same_event_written_differently_is_a_duplicate(
    stack_for: Callable[..., Any], redis: Redis, rewrite: Callable[[dict[str, Any]], bytes]
) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    assert (await post_raw(stack, orjson.dumps(event))).status == 202
    again = await post_raw(stack, rewrite(event))
    assert (again.status, again.body) == (200, {"event_id": event["event_id"], "status": "duplicate"})
    assert await stream_length(redis) == 1


@pytest.mark.parametrize(
    "change", [{"amount": "1234.57"}, {"counterparty": "Other"}, {"balance": None}, {"priority": "critical"}]
)
async def test_same_id_different_body_is_a_conflict(
    stack_for: Callable[..., Any], redis: Redis, change: dict[str, Any]
) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    assert (await post_raw(stack, orjson.dumps(event))).status == 202
    changed = make_event(**{**change, "event_id": event["event_id"]})
    answer = await post_raw(stack, orjson.dumps(changed))
    assert_error(answer, 422, "event_id_conflict", "event_id")
    assert await stream_length(redis) == 1
    lookup = await stack.client.call("GET", f"/v1/events/{event['event_id']}")
    assert lookup[1]["status"] == "queued"


async def test_the_same_id_from_another_source_is_another_event(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, OTHER_KEY_ID: OTHER_SECRET})
    event = make_event()
    body = orjson.dumps(event)
    assert (await post_raw(stack, body)).status == 202
    other = await post_raw(stack, body, key_id=OTHER_KEY_ID, secret=OTHER_SECRET)
    assert (other.status, other.body["status"]) == (202, "queued")
    conflict = orjson.dumps({**event, "amount": "1.00"})
    third = await post_raw(
        stack, conflict, key_id=OTHER_KEY_ID, secret=OTHER_SECRET, at_s=int(time.time()) - 1
    )
    assert_error(third, 422, "event_id_conflict")
    assert await stream_length(redis) == 2


@pytest.mark.parametrize("coalesce", [True, False])
async def test_fifty_concurrent_posts_of_one_event_queue_it_once(
    stack_for: Callable[..., Any], redis: Redis, coalesce: bool
) -> None:
    stack: Stack = await stack_for(workers=0, ingest_coalesce=coalesce)
    event = make_event()
    body = orjson.dumps(event)
    now = int(time.time())
    answers = await asyncio.gather(*(post_raw(stack, body, at_s=now - i) for i in range(50)))
    statuses = sorted((a.status, a.body["status"]) for a in answers)
    assert statuses == [(200, "duplicate")] * 49 + [(202, "queued")]
    assert await stream_length(redis) == 1
