"""One deadline around a round trip replaces redis-py's per-reply socket timeout inside it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core.redis import connect, deadline
from gateway.core.settings import Settings


async def test_replies_inside_a_deadline_wait_past_the_socket_timeout(
    settings_for: Callable[..., Settings],
) -> None:
    client = connect(settings_for(redis_timeout_s=0.1))
    try:
        with pytest.raises(RedisTimeoutError):  # outside a deadline the socket timeout bounds every reply
            await client.blpop(["nothing-here"], timeout=0.3)
        async with deadline(2.0):
            assert await client.blpop(["nothing-here"], timeout=0.3) is None
            async with client.pipeline(transaction=False) as pipe:
                pipe.blpop(["nothing-here"], timeout=0.3)
                pipe.ping()
                assert await pipe.execute() == [None, True]
    finally:
        await client.aclose()


async def test_a_round_trip_past_its_deadline_fails_and_leaves_no_half_read_connection(
    settings_for: Callable[..., Settings],
) -> None:
    client = connect(settings_for(redis_timeout_s=5.0))
    try:
        with pytest.raises(TimeoutError):
            async with deadline(0.1):
                await client.blpop(["late"], timeout=0.5)
        await client.rpush("late", "for the blocked pop")  # its answer must not reach the next command
        await client.set("next", "mine")
        assert await client.get("next") == "mine"
    finally:
        await client.aclose()
