"""/readyz decides with ingest's own predicate: whenever an event would be refused (503), /readyz is 503 too,
and while it accepts /readyz is 200 (or 503 `draining` while the gateway drains, still accepting)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.context import GATEWAY, Gateway
from gateway.core import keys
from tests.gateway.helpers import Answer, send
from tests.support import Running, gateway_serving, make_event

pytestmark = pytest.mark.e2e


@pytest.fixture
async def served(settings_for: Callable[..., Any]) -> AsyncIterator[tuple[Running, aiohttp.ClientSession]]:
    running = await gateway_serving(settings_for(max_ingest_waiting=2)).start()
    async with aiohttp.ClientSession() as session:
        yield running, session
    await running.stop()


async def _both(running: Running, session: aiohttp.ClientSession) -> tuple[Answer, Answer]:
    ready = await send(session, running.url, "GET", "/readyz")
    ingest = await send(session, running.url, "POST", "/v1/events", make_event())
    return ready, ingest


async def test_a_full_gateway_is_not_ready_before_it_refuses(
    served: tuple[Running, aiohttp.ClientSession],
) -> None:
    """At the admission limit the next event is refused: /readyz said `ready` until one had been refused."""
    running, session = served
    gateway: Gateway = running.app[GATEWAY]
    gateway.admission.waiting = gateway.admission.limit  # as many ingest requests in work as allowed
    try:
        ready, ingest = await _both(running, session)
    finally:
        gateway.admission.waiting = 0
    assert ingest.status == 503
    assert (ready.status, ready.body["status"]) == (503, "shedding")


async def test_a_lost_epoch_is_said_by_readyz_as_soon_as_ingest_refuses(
    served: tuple[Running, aiohttp.ClientSession], redis: Redis
) -> None:
    running, session = served
    gateway: Gateway = running.app[GATEWAY]
    await redis.delete(keys.EPOCH)
    await gateway.readiness.refresh(gateway.redis)
    ready, ingest = await _both(running, session)
    assert ingest.status == 503
    assert ready.status == 503 and ready.body["data_lost"] is True
    assert ready.body["problems"], ready.body


async def test_ready_exactly_when_ingest_accepts_and_draining_still_accepts(
    served: tuple[Running, aiohttp.ClientSession],
) -> None:
    running, session = served
    gateway: Gateway = running.app[GATEWAY]
    ready, ingest = await _both(running, session)
    assert (ready.status, ingest.status) == (200, 202)
    gateway.draining = True
    ready, ingest = await _both(running, session)
    assert (ready.status, ready.body["status"], ingest.status) == (503, "draining", 202)
