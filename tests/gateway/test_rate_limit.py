"""The per-customer rate limit: reject answers 429 + Retry-After, digest folds; exact across processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.gateway.helpers import assert_error, retry_after_s, send, stream_length
from tests.support import RedisServer, make_event
from tests.workers.flows import PUSHGW, ready_gateways, start_gateway

pytestmark = pytest.mark.e2e


async def test_reject_policy_answers_429_with_retry_after(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, rate_limit=RateLimit(3, 60), rate_policy="reject")
    for _ in range(3):
        assert (await stack.client.post_event(make_event(customer_id="C-busy")))[0] == 202
    over = make_event(customer_id="C-busy")
    answer = await send(stack.session, stack.client.url, "POST", "/v1/events", over)
    assert_error(answer, 429, "rate_limited")
    assert 1 <= retry_after_s(answer) <= 60
    assert (await stack.client.call("GET", f"/v1/events/{over['event_id']}"))[0] == 404
    assert (await stack.client.post_event(make_event(customer_id="C-calm")))[0] == 202
    assert await stream_length(redis) == 4


async def test_digest_policy_folds_events_over_the_limit(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(workers=0, rate_limit=RateLimit(3, 60))
    answers = [await stack.client.post_event(make_event(customer_id="C-busy")) for _ in range(5)]
    assert [(status, body["status"]) for status, body in answers] == [(202, "queued")] * 3 + [
        (202, "digested")
    ] * 2
    assert await stream_length(redis) == 3
    assert await redis.llen(keys.digest_held(0, "C-busy")) == 2
    assert await redis.zscore(keys.digest_due(0), "C-busy") is not None
    digested_id = answers[4][1]["event_id"]
    status, body = await stack.client.call("GET", f"/v1/events/{digested_id}")
    assert (status, body["status"]) == (200, "digested")


@pytest.fixture
async def two_gateways(redis: Redis, redis_server: RedisServer) -> AsyncIterator[list[str]]:
    """Two real `pushgw gateway` processes on one Redis, ready (their /healthz answers)."""
    limit = {"PUSHGW_RATE_LIMIT": "5/60", "PUSHGW_RATE_POLICY": "reject"}
    async with ready_gateways([start_gateway([PUSHGW], redis_server.url, **limit) for _ in range(2)]) as urls:
        yield urls


async def test_the_limit_is_exact_across_two_gateway_processes(two_gateways: list[str], redis: Redis) -> None:
    events = [make_event(customer_id="C-race") for _ in range(30)]
    async with aiohttp.ClientSession() as session:
        answers = await asyncio.gather(
            *(
                send(session, two_gateways[i % 2], "POST", "/v1/events", raw=orjson.dumps(event))
                for i, event in enumerate(events)
            )
        )
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [202] * 5 + [429] * 25
    for answer in answers:
        if answer.status == 429:
            assert_error(answer, 429, "rate_limited")
            retry_after_s(answer)
    served = {i % 2 for i, answer in enumerate(answers) if answer.status in {202, 429}}
    assert served == {0, 1}
    assert await stream_length(redis) == 5
