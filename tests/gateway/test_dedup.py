"""Idempotency on event_id (scoped by source): duplicates answer 200, conflicts 422, races queue once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
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


SHARDS = 4


def _customers_of_two_shards() -> tuple[str, str]:
    first = "C-shard-a"
    second = next(
        f"C-shard-{n}"
        for n in range(100)
        if keys.shard_of(f"C-shard-{n}", SHARDS) != keys.shard_of(first, SHARDS)
    )
    return first, second


async def _queued_anywhere(redis: Redis) -> int:
    return sum([int(await redis.xlen(keys.stream(shard))) for shard in range(SHARDS)])


@pytest.mark.parametrize("route", ["single", "batch"])
async def test_one_event_id_sent_for_customers_of_two_shards_is_a_conflict(
    stack_for: Callable[..., Any], redis: Redis, route: str
) -> None:
    """The record lives in its customer's shard; the id's claim makes the other shard see it too."""
    stack: Stack = await stack_for(workers=0, shards=SHARDS)
    first, second = _customers_of_two_shards()
    event = make_event(customer_id=first)
    moved = {**event, "customer_id": second}
    assert (await stack.client.post_event(event))[0] == 202
    if route == "single":
        assert_error(await post_raw(stack, orjson.dumps(moved)), 422, "event_id_conflict", "event_id")
    else:
        status, body = await stack.client.call("POST", "/v1/events/batch", {"events": [moved]})
        [result] = body["results"]
        assert (status, result["status"], result["error"]["code"]) == (200, "rejected", "event_id_conflict")
    assert await _queued_anywhere(redis) == 1
    again = await post_raw(stack, orjson.dumps(event), at_s=int(time.time()) - 1)  # a new signature
    assert (again.status, again.body["status"]) == (200, "duplicate")
    lookup = await stack.client.call("GET", f"/v1/events/{event['event_id']}")
    assert lookup[1]["status"] == "queued"


async def test_one_event_id_sent_at_once_for_customers_of_two_shards_is_queued_once(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, shards=SHARDS)
    first, second = _customers_of_two_shards()
    event = make_event(customer_id=first)
    bodies = [orjson.dumps({**event, "customer_id": c}) for c in (first, second) for _ in range(10)]
    now = int(time.time())
    answers = await asyncio.gather(*(post_raw(stack, b, at_s=now - i) for i, b in enumerate(bodies)))
    codes = sorted(a.body.get("status") or a.body["error"]["code"] for a in answers)
    assert codes.count("queued") == 1
    assert codes.count("event_id_conflict") == 10 or codes.count("duplicate") == 9  # whichever came first
    assert set(codes) <= {"queued", "duplicate", "event_id_conflict"}
    assert await _queued_anywhere(redis) == 1


async def test_a_conflict_found_by_the_record_leaves_no_claim_for_the_refused_payload(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    """A record without a claim (written before claims existed, or outliving its claim): the refused payload
    must not claim the id, or the accepted event's own re-send would be answered as a conflict."""
    stack: Stack = await stack_for(workers=0, shards=SHARDS)
    event = make_event(customer_id="C-before-claims")
    assert (await stack.client.post_event(event))[0] == 202
    claim = keys.event_claim(KEY_ID, event["event_id"], SHARDS)
    assert await redis.delete(claim) == 1
    changed = orjson.dumps({**event, "amount": "1.00"})
    assert_error(await post_raw(stack, changed), 422, "event_id_conflict", "event_id")
    assert not await redis.exists(claim)
    again = await post_raw(stack, orjson.dumps(event), at_s=int(time.time()) - 1)
    assert (again.status, again.body["status"]) == (200, "duplicate")
