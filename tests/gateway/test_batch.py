"""POST /v1/events/batch: per-item results in request order, limits, in-batch duplicates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, assert_error_shape, key_count, send, stream_length
from tests.support import make_event

pytestmark = pytest.mark.e2e


async def post_batch(stack: Stack, data: Any) -> Answer:
    return await send(stack.session, stack.client.url, "POST", "/v1/events/batch", data)


async def test_mixed_items_get_results_in_request_order(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0)
    good = [make_event(customer_id=f"C-mix{i}") for i in range(3)]
    items: list[Any] = [
        good[0],
        make_event(amount=1.5),
        good[1],
        "not an object",
        {**make_event(), "surprise": 1},
        make_event(account=None),
        good[2],
    ]
    answer = await post_batch(stack, {"events": items})
    assert answer.status == 200
    results = answer.body["results"]
    assert [r["status"] for r in results] == [
        "queued", "rejected", "queued", "rejected", "rejected", "rejected", "queued"
    ]  # fmt: skip
    assert [r["event_id"] for r in results] == [
        good[0]["event_id"],
        items[1]["event_id"],
        good[1]["event_id"],
        None,
        items[4]["event_id"],
        items[5]["event_id"],
        good[2]["event_id"],
    ]
    errors = [(r["error"]["code"], r["error"].get("field")) for r in results if r["status"] == "rejected"]
    assert errors == [
        ("invalid_field", "amount"),
        ("invalid_field", ""),
        ("unknown_field", "surprise"),
        ("missing_field", "account"),
    ]
    for result in results:
        if "error" in result:
            assert_error_shape({"error": result["error"]})
    assert await stream_length(redis) == 3


async def test_a_batch_of_only_invalid_items_changes_nothing(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0)
    before = await key_count(redis)
    answer = await post_batch(stack, {"events": [make_event(type="x"), make_event(currency="XXX")]})
    assert [r["status"] for r in answer.body["results"]] == ["rejected", "rejected"]
    assert await key_count(redis) - before <= 1  # at most the batch's replay-protection signature
    assert await stream_length(redis) == 0


async def test_more_than_max_batch_events_is_413(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0, max_batch_events=10)
    events = [make_event(customer_id=f"C-big{i}") for i in range(11)]
    assert_error(await post_batch(stack, {"events": events}), 413, "payload_too_large")
    assert await stream_length(redis) == 0
    assert (await post_batch(stack, {"events": events[:10]})).status == 200
    assert await stream_length(redis) == 10


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"events": []}, "events"),
        ({}, "events"),
        ([make_event()], "events"),
        ({"events": make_event()}, "events"),
        ({"events": "x"}, "events"),
        ({"events": None}, "events"),
        ({"events": [make_event()], "extra": 1}, "extra"),
        ({"event": [make_event()]}, "event"),
        ({"b": 1, "a": 2}, "a"),
        ("events", "events"),
    ],
)
async def test_wrong_top_level_shape_is_422(
    stack_for: Callable[..., Any], redis: Redis, data: Any, field: str
) -> None:
    stack: Stack = await stack_for(workers=0)
    code = "unknown_field" if isinstance(data, dict) and field != "events" else "invalid_field"
    assert_error(await post_batch(stack, data), 422, code, field)
    assert await stream_length(redis) == 0


async def test_an_id_twice_in_one_batch_is_queued_once(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    conflicting = {**event, "amount": "9.99"}
    answer = await post_batch(stack, {"events": [event, event, conflicting]})
    results = answer.body["results"]
    assert [r["status"] for r in results] == ["queued", "duplicate", "rejected"]
    assert results[2]["error"]["code"] == "event_id_conflict"
    assert {r["event_id"] for r in results} == {event["event_id"]}
    assert await stream_length(redis) == 1


async def test_a_batch_item_already_posted_alone_is_a_duplicate(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0)
    event = make_event()
    assert (await stack.client.post_event(event))[0] == 202
    answer = await post_batch(stack, {"events": [event]})
    assert answer.body["results"] == [{"event_id": event["event_id"], "status": "duplicate"}]
    assert await stream_length(redis) == 1


async def test_a_batch_of_500_is_queued_whole(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0)
    events = [make_event(customer_id=f"C-bulk{i}") for i in range(500)]
    answer = await post_batch(stack, {"events": events})
    assert answer.status == 200
    assert [r["event_id"] for r in answer.body["results"]] == [e["event_id"] for e in events]
    assert {r["status"] for r in answer.body["results"]} == {"queued"}
    assert await stream_length(redis) == 500


async def test_batch_items_over_the_rate_limit_say_when_to_retry(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, rate_limit=RateLimit(2, 60), rate_policy="reject")
    events = [make_event(customer_id="C-rl") for _ in range(3)]
    results = (await post_batch(stack, {"events": events})).body["results"]
    assert [r["status"] for r in results] == ["queued", "queued", "rate_limited"]
    assert results[2]["error"]["code"] == "rate_limited"
    assert results[2]["retry_after_s"] >= 1
    assert await stream_length(redis) == 2
