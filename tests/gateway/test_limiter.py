"""The per-customer rate limit as a property: never more than N accepted in any window of W, whatever the
pattern of concurrent bursts, through the real ingest script; and the same through two gateway processes
whose clocks disagree by minutes (the limiter reads Redis TIME, so a host's clock cannot matter).

The check reads each accepted event's `accepted_ms` (Redis TIME, written by the script that admitted it):
sorted, any N+1 consecutive ones span at least W.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.event import parse_event
from gateway.core.scripts import IngestArgs, Scripts
from gateway.core.settings import RateLimit, Settings
from tests.gateway.helpers import send
from tests.support import KEY_ID, RedisServer, make_event, signed_headers
from tests.workers.flows import ready_gateways, start_gateway

pytestmark = pytest.mark.e2e

WINDOW_MS = 1000
SKEW_S = 150  # each gateway's clock is this far off, one ahead and one behind: 5 minutes apart
_customers = itertools.count()
# (burst size, pause after it in ms): a burst is sent all at once
bursts = st.lists(st.tuples(st.integers(1, 10), st.integers(0, 700)), min_size=1, max_size=4)


def _args(event: dict[str, Any]) -> IngestArgs:
    return IngestArgs.of(KEY_ID, parse_event(event), critical=False)


async def accepted_ms(redis: Redis, customer_id: str, event_ids: list[str]) -> list[int]:
    """Redis TIME at which each queued event of the list was admitted, sorted."""
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hmget(keys.event(0, KEY_ID, event_id), ["status", "accepted_ms"])
        found = await pipe.execute()
    return sorted(int(at) for status, at in found if status == "queued")


def assert_within_limit(times_ms: list[int], count: int) -> None:
    """No window of WINDOW_MS holds more than `count` of the times."""
    for first, last in zip(times_ms, times_ms[count:], strict=False):
        assert last - first >= WINDOW_MS, f"{count + 1} admitted within {last - first} ms: {times_ms}"


@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(count=st.integers(1, 5), pattern=bursts)
async def test_never_more_than_n_in_any_window_under_concurrent_bursts(
    redis: Redis, settings_for: Callable[..., Settings], count: int, pattern: list[tuple[int, int]]
) -> None:
    scripts = Scripts(settings_for(rate_limit=RateLimit(count, WINDOW_MS // 1000), rate_policy="reject"))
    await scripts.load(redis)
    customer = f"C-limit-{next(_customers)}"
    sent: list[str] = []
    first_burst: list[str] = []
    for size, pause_ms in pattern:
        events = [make_event(customer_id=customer) for _ in range(size)]
        answers = await asyncio.gather(*(scripts.ingest(redis, _args(event)) for event in events))
        if not sent:
            first_burst = [str(status) for status, _ in answers]
        sent += [event["event_id"] for event in events]
        await asyncio.sleep(pause_ms / 1000)
    assert first_burst.count("queued") == min(pattern[0][0], count)  # exact: a free window admits
    assert_within_limit(await accepted_ms(redis, customer, sent), count)


# --- two gateway processes, clocks minutes apart --------------------------------------------------------

_SKEWED = """
import sys, time
skew_s = float(sys.argv.pop(1))
real_time, real_time_ns = time.time, time.time_ns
time.time = lambda: real_time() + skew_s
time.time_ns = lambda: real_time_ns() + int(skew_s * 1e9)
from gateway.cli import main
main(sys.argv[1:])
"""


def _start_skewed(redis_server: RedisServer, skew_s: int) -> tuple[subprocess.Popen[bytes], str]:
    """`pushgw gateway` whose Python clock (time.time) is `skew_s` off; limit 3/1 s, reject."""
    command = [sys.executable, "-c", _SKEWED, str(skew_s)]
    return start_gateway(command, redis_server.url, PUSHGW_RATE_LIMIT="3/1", PUSHGW_RATE_POLICY="reject")


@pytest.fixture
async def skewed_gateways(redis: Redis, redis_server: RedisServer) -> AsyncIterator[list[str]]:
    """Two gateway processes on one Redis, one clock SKEW_S ahead and one SKEW_S behind, both ready."""
    async with ready_gateways([_start_skewed(redis_server, skew) for skew in (SKEW_S, -SKEW_S)]) as urls:
        yield urls


async def test_the_gateways_clocks_really_differ(skewed_gateways: list[str]) -> None:
    """A request stamped 4 minutes ahead is inside the window of the gateway whose clock runs ahead, and
    outside the other's: their clocks are 5 minutes apart."""
    ahead, behind = skewed_gateways
    async with aiohttp.ClientSession() as session:
        for url, expected in ((ahead, 202), (behind, 401)):
            body = orjson.dumps(make_event(customer_id="C-clock"))
            headers = signed_headers(body, at_s=int(time.time()) + 240)
            answer = await send(session, url, "POST", "/v1/events", raw=body, headers=headers)
            assert answer.status == expected, answer


@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(pattern=bursts, data=st.data())
async def test_clock_skew_between_gateways_cannot_exceed_the_limit(
    skewed_gateways: list[str], redis: Redis, pattern: list[tuple[int, int]], data: st.DataObject
) -> None:
    customer = f"C-skew-{next(_customers)}"
    sent: list[str] = []
    async with aiohttp.ClientSession() as session:
        for size, pause_ms in pattern:
            events = [make_event(customer_id=customer) for _ in range(size)]
            targets = data.draw(st.lists(st.sampled_from(skewed_gateways), min_size=size, max_size=size))
            answers = await asyncio.gather(
                *(
                    send(session, url, "POST", "/v1/events", raw=orjson.dumps(event))
                    for url, event in zip(targets, events, strict=True)
                )
            )
            assert {answer.status for answer in answers} <= {202, 429}
            sent += [event["event_id"] for event in events]
            await asyncio.sleep(pause_ms / 1000)
    assert_within_limit(await accepted_ms(redis, customer, sent), 3)
