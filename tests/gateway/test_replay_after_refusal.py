"""A refused request leaves no trace of its signature's nonce: its identical re-send (same bytes and
headers) gets the same answer again, or is accepted once the cause is gone, never 401 "used before". An
accepted PUT's nonce stays recorded: its replay is 401, and of two identical concurrent PUTs exactly one gets
in. Ingest keeps no nonces: a re-sent event or batch is answered by the event-id dedup (200 duplicate), never
401."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.auth import Caller
from gateway.context import GATEWAY, Gateway
from gateway.core import keys
from gateway.core.settings import Settings
from tests.gateway.helpers import Answer, assert_error, retry_after_s, send, stream_length
from tests.support import Running, gateway_serving, make_event, signed_headers

pytestmark = pytest.mark.e2e

BATCH, BINDING, PREFERENCES = "/v1/events/batch", "/v1/bindings/C-rr", "/v1/customers/C-rr/preferences"
PUTS = [
    pytest.param(BINDING, lambda: {"openid": "oUser_rr0001"}, id="binding"),
    pytest.param(PREFERENCES, lambda: {"muted_types": ["debit"]}, id="preferences"),
]
WRITES = [pytest.param(BATCH, lambda: {"events": [make_event(customer_id="C-rr")]}, id="batch"), *PUTS]


@dataclass
class Ingress:
    """A gateway whose app state the test can reach, and signed requests that can be re-sent as they were."""

    running: Running
    session: aiohttp.ClientSession

    @property
    def gateway(self) -> Gateway:
        return self.running.app[GATEWAY]

    async def send(self, path: str, body: bytes, headers: dict[str, str]) -> Answer:
        return await send(self.session, self.running.url, _method(path), path, raw=body, headers=headers)

    async def twice(self, path: str, body: bytes) -> tuple[Answer, Answer]:
        """The request, then its identical re-send."""
        headers = signed_for(path, body)
        first = await self.send(path, body, headers)
        return first, await self.send(path, body, headers)


def _method(path: str) -> str:
    return "POST" if path.startswith("/v1/events") else "PUT"


def signed_for(path: str, body: bytes) -> dict[str, str]:
    return signed_headers(body, method=_method(path), target=path)


@pytest.fixture
async def ingress(redis: Redis, settings_for: Callable[..., Settings]) -> AsyncIterator[Ingress]:
    running = await gateway_serving(settings_for()).start()
    session = aiohttp.ClientSession()
    try:
        yield Ingress(running, session)
    finally:
        await session.close()
        await running.stop()


async def recorded_nonces(redis: Redis) -> list[str]:
    return [key async for key in redis.scan_iter(match=keys.nonce(0, "*", "*"))]


@asynccontextmanager
async def denied(redis: Redis, command: str) -> AsyncIterator[None]:
    """Redis refuses `command` (NOPERM), and only that command, while inside."""
    await redis.acl_setuser("default", enabled=True, commands=[f"-{command}"])
    try:
        yield
    finally:
        await redis.acl_setuser("default", enabled=True, commands=[f"+{command}"])


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        pytest.param(BATCH, b'{"events": [', 400, id="batch-not-json"),
        pytest.param(BATCH, b'{"events": []}', 422, id="batch-empty"),
        pytest.param(BATCH, b'{"events": [{}], "more": 1}', 422, id="batch-unknown-field"),
        pytest.param(BINDING, b'{"openid": "x"}', 422, id="binding-bad-openid"),
        pytest.param("/v1/bindings/C*rr", b'{"openid": "oUser_rr0001"}', 422, id="binding-bad-path-id"),
        pytest.param(PREFERENCES, b'{"muted_types": ["nope"]}', 422, id="preferences-bad-type"),
        pytest.param(PREFERENCES, b'{"colour": "red"}', 422, id="preferences-unknown-field"),
        pytest.param("/v1/events", b'{"event_id": "E1"}', 422, id="event-missing-fields"),
    ],
)
async def test_a_refused_request_re_sent_as_it_was_gets_the_same_answer(
    ingress: Ingress, redis: Redis, path: str, body: bytes, status: int
) -> None:
    first, again = await ingress.twice(path, body)
    assert_error(first, status)
    assert (again.status, again.body) == (first.status, first.body), "not 401: the refusal recorded nothing"
    assert await recorded_nonces(redis) == []


async def test_a_batch_without_a_valid_event_records_nothing(ingress: Ingress, redis: Redis) -> None:
    body = orjson.dumps({"events": [make_event(amount="-1")]})
    first, again = await ingress.twice(BATCH, body)
    assert first.status == 200 and first.body["results"][0]["status"] == "rejected"
    assert (again.status, again.body) == (first.status, first.body)
    assert await recorded_nonces(redis) == []


async def test_a_batch_whose_every_event_is_refused_may_be_re_sent(ingress: Ingress, redis: Redis) -> None:
    event = make_event()
    assert (
        await ingress.send("/v1/events", orjson.dumps(event), signed_for("/v1/events", orjson.dumps(event)))
    ).status == 202
    body = orjson.dumps({"events": [{**event, "amount": "1.00"}]})
    first, again = await ingress.twice(BATCH, body)
    assert first.status == 200 and first.body["results"][0]["error"]["code"] == "event_id_conflict"
    assert (again.status, again.body) == (first.status, first.body)
    assert await stream_length(redis) == 1


async def test_a_batch_refused_while_redis_is_not_durable_is_accepted_when_re_sent_after(
    ingress: Ingress, redis: Redis
) -> None:
    body = orjson.dumps({"events": [make_event(customer_id="C-d1"), make_event(customer_id="C-d2")]})
    headers = signed_for(BATCH, body)
    readiness = ingress.gateway.readiness
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    try:
        await readiness.refresh(ingress.gateway.redis)
        refused = await ingress.send(BATCH, body, headers)
    finally:
        await redis.config_set("maxmemory-policy", "noeviction")
    assert_error(refused, 503, "unavailable")
    retry_after_s(refused)
    await readiness.refresh(ingress.gateway.redis)
    again = await ingress.send(BATCH, body, headers)
    assert again.status == 200, again
    assert [result["status"] for result in again.body["results"]] == ["queued", "queued"]
    assert await stream_length(redis) == 2


@pytest.mark.parametrize(("path", "valid"), WRITES)
async def test_a_write_redis_refused_is_accepted_when_re_sent_after(
    ingress: Ingress, redis: Redis, path: str, valid: Callable[[], Any]
) -> None:
    """The signature was recorded, then the write failed (503): it is forgotten again."""
    body = orjson.dumps(valid())
    headers = signed_for(path, body)
    async with denied(redis, "evalsha" if path == BATCH else "hset"):
        refused = await ingress.send(path, body, headers)
    assert_error(refused, 503, "unavailable")
    assert await recorded_nonces(redis) == []
    again = await ingress.send(path, body, headers)
    assert again.status == 200, again
    if path == BATCH:
        assert again.body["results"][0]["status"] == "queued"
        assert await stream_length(redis) == 1


@pytest.mark.parametrize(("path", "valid"), PUTS)
async def test_an_accepted_write_replayed_is_401(
    ingress: Ingress, redis: Redis, path: str, valid: Callable[[], Any]
) -> None:
    first, again = await ingress.twice(path, orjson.dumps(valid()))
    assert first.status == 200, first
    assert_error(again, 401, "unauthorized")
    assert len(await recorded_nonces(redis)) == 1


@pytest.mark.parametrize(("path", "valid"), PUTS)
async def test_of_two_identical_concurrent_writes_one_is_accepted(
    ingress: Ingress, path: str, valid: Callable[[], Any]
) -> None:
    body = orjson.dumps(valid())
    headers = signed_for(path, body)
    answers = await asyncio.gather(*(ingress.send(path, body, headers) for _ in range(2)))
    assert sorted(answer.status for answer in answers) == [200, 401]


async def test_a_re_sent_event_is_answered_by_dedup_not_401(ingress: Ingress, redis: Redis) -> None:
    """A client or proxy re-sending a signed POST byte for byte after a timeout gets `duplicate`."""
    first, again = await ingress.twice("/v1/events", orjson.dumps(make_event(customer_id="C-rr")))
    assert first.status == 202, first
    assert (again.status, again.body["status"]) == (200, "duplicate")
    assert await recorded_nonces(redis) == []
    assert await stream_length(redis) == 1


async def test_a_re_sent_batch_is_answered_by_dedup_not_401(ingress: Ingress, redis: Redis) -> None:
    body = orjson.dumps({"events": [make_event(customer_id="C-rr"), make_event(customer_id="C-rr2")]})
    headers = signed_for(BATCH, body)
    answers = await asyncio.gather(*(ingress.send(BATCH, body, headers) for _ in range(2)))
    assert [answer.status for answer in answers] == [200, 200]
    statuses = sorted(result["status"] for answer in answers for result in answer.body["results"])
    assert statuses == ["duplicate", "duplicate", "queued", "queued"]
    assert await stream_length(redis) == 2


async def test_an_event_id_conflict_re_sent_as_it_was_is_422_again(ingress: Ingress, redis: Redis) -> None:
    event = make_event()
    assert (
        await ingress.send("/v1/events", orjson.dumps(event), signed_for("/v1/events", orjson.dumps(event)))
    ).status == 202
    first, again = await ingress.twice("/v1/events", orjson.dumps({**event, "amount": "1.00"}))
    assert_error(first, 422, "event_id_conflict", "event_id")
    assert_error(again, 422, "event_id_conflict", "event_id")
    assert await recorded_nonces(redis) == [], "ingest keeps no nonces"
    assert await stream_length(redis) == 1


@pytest.mark.parametrize(
    ("failure", "replay_harmless", "forgotten"),
    [
        pytest.param(ResponseError("NOPERM"), False, True, id="redis-refused-the-write"),
        pytest.param(RedisTimeoutError("late"), False, False, id="timeout-a-write-may-have-applied"),
        pytest.param(RedisTimeoutError("late"), True, True, id="timeout-events-deduplicate"),
    ],
)
async def test_a_failed_write_forgets_its_nonce_only_when_a_replay_cannot_redo_it(
    ingress: Ingress, redis: Redis, failure: Exception, replay_harmless: bool, forgotten: bool
) -> None:
    caller = Caller(source="cbs", nonce="n0nce-" * 4)
    with pytest.raises(type(failure)):
        async with ingress.gateway.remembered(caller, replay_harmless=replay_harmless):
            raise failure
    assert (await recorded_nonces(redis) == []) is forgotten
