"""The data epoch as an explicit act (`pushgw epoch init|show`, PUSHGW_REDIS_EPOCH), a Redis outage told
apart from a Redis that is not durable, and `pushgw reconcile` saying that data is missing underneath."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.context import GATEWAY
from gateway.core import keys
from gateway.core.redis import DataLost, ensure_groups, read_epoch
from gateway.core.settings import ConfigError, Settings
from gateway.ops.epoch import run_epoch
from gateway.ops.reconcile import reconcile
from tests.gateway.helpers import assert_error, send
from tests.support import RedisServer, gateway_serving, make_event

pytestmark = pytest.mark.e2e


async def epoch_command(
    settings: Settings, action: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, Any]:
    status = await run_epoch(settings, argparse.Namespace(action=action, yes=False))
    return status, orjson.loads(capsys.readouterr().out)


async def test_init_writes_the_epoch_once_and_prints_it(
    redis: Redis, settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    settings = settings_for()
    existing = await read_epoch(redis)
    assert existing is not None  # the fixture initialised it, as an operator would
    assert await epoch_command(settings, "init", capsys) == (1, {"epoch": dataclasses.asdict(existing)})

    await redis.flushall()
    status, shown = await epoch_command(settings, "init", capsys)
    written = await read_epoch(redis)
    assert status == 0 and written is not None and written.how == "init"
    assert shown == {"epoch": dataclasses.asdict(written)}
    assert await epoch_command(settings, "show", capsys) == (0, {**shown, "expected": None})


async def test_init_refuses_where_the_setting_names_an_epoch_and_adopts_data_from_before_epochs(
    redis: Redis, settings_for: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    await redis.flushall()
    pinned = settings_for(redis_epoch="0123456789abcdef")
    assert (await epoch_command(pinned, "init", capsys))[0] == 1
    assert await read_epoch(redis) is None, "init wrote an epoch for a deployment that names another"
    assert await epoch_command(pinned, "show", capsys) == (1, {"epoch": None, "expected": "0123456789abcdef"})

    await redis.xadd(keys.stream(0), {"kind": "event", "eid": "E-old"})
    status, shown = await epoch_command(settings_for(), "init", capsys)
    assert (status, shown["epoch"]["how"]) == (0, "adopted")


def test_the_setting_takes_an_epoch_id_only() -> None:
    assert Settings.from_env({"PUSHGW_REDIS_EPOCH": " 91fa3c00d2e4b7a1 "}).redis_epoch == "91fa3c00d2e4b7a1"
    with pytest.raises(ConfigError, match="PUSHGW_REDIS_EPOCH"):
        Settings.from_env({"PUSHGW_REDIS_EPOCH": "not an id!"})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_a_gateway_pinned_to_another_epoch_refuses_and_says_why(
    redis: Redis, settings_for: Callable[..., Settings], session: aiohttp.ClientSession
) -> None:
    running = await gateway_serving(settings_for(redis_epoch="0123456789abcdef")).start()
    try:
        answer = await send(session, running.url, "POST", "/v1/events", make_event())
        ready = await send(session, running.url, "GET", "/readyz")
    finally:
        await running.stop()
    assert_error(answer, 503, "unavailable")
    assert ready.status == 503
    assert any("PUSHGW_REDIS_EPOCH" in problem for problem in ready.body["problems"]), ready.body
    assert not await redis.exists(keys.stream(0))


async def test_ensure_groups_creates_nothing_in_an_epoch_less_redis(redis: Redis) -> None:
    await redis.flushall()
    with pytest.raises(DataLost, match="no data epoch"):
        await ensure_groups(redis, 1)
    assert await redis.dbsize() == 0


def _durable_metric() -> float | None:
    return REGISTRY.get_sample_value("pushgw_redis_durable")


async def test_a_redis_outage_is_unreachable_not_not_durable(
    redis_server: RedisServer, settings_for: Callable[..., Settings], session: aiohttp.ClientSession
) -> None:
    running = await gateway_serving(settings_for(redis_timeout_s=0.5)).start()
    gateway = running.app[GATEWAY]
    try:
        assert _durable_metric() == 1
        redis_server.stop(kill=True)
        await gateway.readiness.refresh(gateway.redis)
        readiness = gateway.readiness
        assert (readiness.reachable, readiness.durable, readiness.data_lost) == (False, None, False)
        assert any("unreachable" in problem for problem in readiness.problems), readiness.problems
        assert _durable_metric() == 1, "an outage was exported as not durable"
        answer = await send(session, running.url, "POST", "/v1/events", make_event())
        assert_error(answer, 503, "unavailable")
        ready = await send(session, running.url, "GET", "/readyz")
        assert ready.status == 503 and "unreachable" in " ".join(ready.body["problems"]), ready.body
        redis_server.start()
        await gateway.readiness.refresh(gateway.redis)
        assert (readiness.reachable, readiness.durable, readiness.problems) == (True, True, [])
        assert (await send(session, running.url, "POST", "/v1/events", make_event())).status == 202
    finally:
        await running.stop()


async def test_reconcile_says_data_is_missing_when_a_stream_was_created_again(
    redis: Redis, settings_for: Callable[..., Settings], session: aiohttp.ClientSession
) -> None:
    settings = settings_for()
    running = await gateway_serving(settings).start()
    try:
        for _ in range(3):
            assert (await send(session, running.url, "POST", "/v1/events", make_event())).status == 202
    finally:
        await running.stop()
    whole = await reconcile(redis, settings, 0, 2**62)
    assert (whole.exit_status, whole.queued_records, whole.data_missing) == (0, {"0": 3}, [])
    assert whole.streams[keys.stream(0)] == 3

    await redis.delete(keys.stream(0))  # the records stay; the stream comes back empty, its counter at 0
    await ensure_groups(redis, 1)
    recreated = await reconcile(redis, settings, 0, 2**62)
    assert recreated.exit_status == 3 and "shard 0" in recreated.data_missing[0], recreated.data_missing
    behind = await reconcile(redis, settings, 0, 2**62, previous=whole.report())
    assert any("went back from 3 to 0" in problem for problem in behind.data_missing), behind.data_missing

    epoch = await read_epoch(redis)
    assert epoch is not None
    await redis.delete(keys.EPOCH)
    pinned = dataclasses.replace(settings, redis_epoch=epoch.epoch_id)
    gone = await reconcile(redis, pinned, 0, 2**62)
    assert gone.epoch is None and gone.expected_epoch == epoch.epoch_id
    assert any("no data epoch" in problem for problem in gone.data_missing), gone.data_missing
