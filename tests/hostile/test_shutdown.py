"""A gateway asked to stop stops: measuring slow clients once left `pushgw gateway` hanging on SIGTERM, its
readiness check having swallowed the one cancellation it was sent (a Redis call inside it was being cancelled
at that moment)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from gateway import app
from gateway.core.settings import Settings
from gateway.readiness import Readiness
from gateway.server import gateway_listening

pytestmark = pytest.mark.e2e


async def test_a_readiness_check_that_swallows_cancellation_does_not_hold_the_stop(
    settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    checks, swallowed = 0, 0

    async def stubborn_refresh(self: Readiness, redis: Redis) -> None:
        nonlocal checks, swallowed
        checks += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed += 1  # what a Redis call cancelled at the wrong moment did, once

    monkeypatch.setattr(app, "READINESS_INTERVAL_S", 0.01)
    monkeypatch.setattr(Readiness, "refresh", stubborn_refresh)
    async with gateway_listening(settings_for(), "127.0.0.1", 0):
        while checks < 5:
            await asyncio.sleep(0.02)
        started = time.monotonic()
    assert time.monotonic() - started < 5
