"""Redis down, paused or not durable: the gateway answers 503 + Retry-After, never 202, and a retry after
recovery is accepted exactly once."""

from __future__ import annotations

import signal
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from gateway.context import GATEWAY
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, retry_after_s, send, stream_length
from tests.support import (
    Client,
    RedisServer,
    Running,
    eventually,
    gateway_serving,
    make_event,
    signed_headers,
)

pytestmark = pytest.mark.e2e


async def call(stack: Stack, method: str, path: str, data: Any = None, **kwargs: Any) -> Answer:
    return await send(stack.session, stack.client.url, method, path, data, **kwargs)


def assert_unavailable(answer: Answer) -> None:
    assert_error(answer, 503, "unavailable")
    retry_after_s(answer)


async def test_redis_down_answers_503_and_never_202(
    stack_for: Callable[..., Any], redis_server: RedisServer
) -> None:
    stack: Stack = await stack_for(workers=0)
    assert (await call(stack, "POST", "/v1/events", make_event())).status == 202
    redis_server.stop(kill=True)
    assert_unavailable(await call(stack, "POST", "/v1/events", make_event()))
    assert_unavailable(await call(stack, "POST", "/v1/events/batch", {"events": [make_event()]}))
    assert_unavailable(await call(stack, "PUT", "/v1/bindings/C1", {"openid": "oUser_down01"}))
    assert_unavailable(await call(stack, "GET", "/v1/bindings/C1"))
    assert_unavailable(await call(stack, "GET", "/v1/events/E1"))
    ready = await call(stack, "GET", "/readyz")
    assert ready.status == 503 and ready.body["status"] == "unavailable"
    assert (await call(stack, "GET", "/healthz")).status == 200
    invalid = await call(stack, "POST", "/v1/events", make_event(amount="-1"))
    assert_error(invalid, 422, "invalid_field", "amount")  # bad input is still told apart from an outage


async def test_redis_restarted_accepts_again(
    stack_for: Callable[..., Any], redis_server: RedisServer
) -> None:
    stack: Stack = await stack_for(workers=0)
    redis_server.stop(kill=True)
    event = make_event()
    assert_unavailable(await call(stack, "POST", "/v1/events", event))
    redis_server.start()

    async def accepted() -> bool:
        return (await call(stack, "POST", "/v1/events", event)).status in {200, 202}

    await eventually(accepted, timeout_s=10)
    client = Redis.from_url(redis_server.url, decode_responses=True)
    try:
        assert await stream_length(client) >= 1
    finally:
        await client.aclose()


async def test_a_stopped_redis_gets_503_within_the_deadline_and_the_retry_queues_once(
    stack_for: Callable[..., Any], redis: Redis, redis_server: RedisServer
) -> None:
    stack: Stack = await stack_for(workers=0, redis_timeout_s=0.5)
    event = make_event()
    body = orjson.dumps(event)
    process = redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)
    try:
        first = await call(stack, "POST", "/v1/events", raw=body)
        ready = await call(stack, "GET", "/readyz")
        health = await call(stack, "GET", "/healthz")
    finally:
        process.send_signal(signal.SIGCONT)
    assert_unavailable(first)
    assert ready.status == 503
    assert health.status == 200
    await assert_retry_is_accepted_once(stack, redis, body)


async def test_a_paused_redis_gets_503_and_the_retry_queues_once(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, redis_timeout_s=0.5)
    body = orjson.dumps(make_event())
    await redis.client_pause(3000, all=False)  # WRITE: reads and PING go on, writes and scripts wait
    try:
        first = await call(stack, "POST", "/v1/events", raw=body)
    finally:
        await redis.client_unpause()
    assert_unavailable(first)
    await assert_retry_is_accepted_once(stack, redis, body)


async def assert_retry_is_accepted_once(stack: Stack, redis: Redis, body: bytes) -> None:
    """Core banking retries the same event (a new timestamp, so a new signature) until it is accepted."""
    retries = iter(range(1, 100))
    answers: list[Answer] = []

    async def accepted() -> bool:
        headers = signed_headers(body, at_s=int(time.time()) + next(retries))
        answers.append(await call(stack, "POST", "/v1/events", raw=body, headers=headers))
        return answers[-1].status in {200, 202}

    await eventually(accepted, timeout_s=10)
    assert answers[-1].body["status"] in {"queued", "duplicate"}
    assert await stream_length(redis) == 1
    # a fresh signature: the first attempt's may have been recorded by a script that ran after the pause
    again = await call(
        stack, "POST", "/v1/events", raw=body, headers=signed_headers(body, at_s=int(time.time()) + 150)
    )
    assert (again.status, again.body["status"]) == (200, "duplicate")
    assert await stream_length(redis) == 1


async def restore(redis: Redis, name: str, value: str) -> None:
    """Set a config back; turning AOF on starts a rewrite, and until it ends Redis refuses to shut down
    (the session server's teardown would hang), so wait for it."""
    await redis.config_set(name, value)

    async def settled() -> bool:
        info = await redis.info("persistence")
        busy = info["aof_rewrite_in_progress"] or info["aof_rewrite_scheduled"]
        return bool(info["aof_enabled"] and not busy)

    await eventually(settled, timeout_s=10)


@pytest.fixture
async def gateway_app(
    redis: Redis, settings_for: Callable[..., Any]
) -> AsyncIterator[tuple[Running, Client, aiohttp.ClientSession]]:
    """A gateway whose app state the test can reach (to refresh its readiness now, not in 5 s)."""
    running = await gateway_serving(settings_for()).start()
    session = aiohttp.ClientSession()
    try:
        yield running, Client(session, running.url), session
    finally:
        await session.close()
        await running.stop()


@pytest.mark.parametrize(
    ("name", "unsafe", "safe"),
    [("appendonly", "no", "yes"), ("maxmemory-policy", "allkeys-lru", "noeviction")],
)
async def test_a_redis_that_may_lose_events_is_refused(
    gateway_app: tuple[Running, Client, aiohttp.ClientSession],
    redis: Redis,
    name: str,
    unsafe: str,
    safe: str,
) -> None:
    running, client, session = gateway_app
    gateway = running.app[GATEWAY]
    assert (await client.post_event(make_event(customer_id="C-d1")))[0] == 202
    await redis.config_set(name, unsafe)
    try:
        await gateway.readiness.refresh(gateway.redis)
        refused = await send(session, running.url, "POST", "/v1/events", make_event(customer_id="C-d2"))
        batch = await send(session, running.url, "POST", "/v1/events/batch", {"events": [make_event()]})
        ready = await send(session, running.url, "GET", "/readyz")
    finally:
        await restore(redis, name, safe)
    assert_unavailable(refused)
    assert_unavailable(batch)
    assert ready.status == 503 and any(name in problem for problem in ready.body["problems"])
    assert await stream_length(redis) == 1
    await gateway.readiness.refresh(gateway.redis)
    assert (await client.post_event(make_event(customer_id="C-d3")))[0] == 202


async def test_a_gateway_started_on_a_non_durable_redis_refuses(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    await redis.config_set("appendonly", "no")
    try:
        stack: Stack = await stack_for(workers=0)
        answer = await call(stack, "POST", "/v1/events", make_event())
        ready = await call(stack, "GET", "/readyz")
    finally:
        await restore(redis, "appendonly", "yes")
    assert_unavailable(answer)
    assert ready.status == 503
    assert await stream_length(redis) == 0
