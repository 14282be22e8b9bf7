"""Issue 20 as it happened: Redis came back empty (a fresh data directory on the same port), a worker and a
gateway were restarted against it, then the old AOF was put back.

Nothing may take the empty Redis for a first run: the gateway that knew the data epoch, a gateway started
against the empty Redis and one pinned by PUSHGW_REDIS_EPOCH all answer 503 (never 202) and /readyz says why;
the new worker waits and creates nothing (no stream, no group, no key at all); `pushgw reconcile` says data
is missing (exit 3). When the old data comes back with its epoch, every one of them goes on without a
restart, and each event accepted before the loss or after the return is delivered exactly once.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core.redis import read_epoch
from gateway.core.settings import RateLimit
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import Client, RedisServer, eventually, gateway_serving, make_event
from tests.workers.flows import StackFactory, pushgw

pytestmark = pytest.mark.e2e

EVENTS = 40


def _move_contents(source: Path, target: Path) -> None:
    target.mkdir(exist_ok=True)
    for path in source.iterdir():
        shutil.move(path, target / path.name)


def _wipe(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


async def _key_count(redis: Redis) -> int:
    """Through the test's own client, which may still hold a connection to the Redis before the restart."""
    for _ in range(3):
        try:
            return int(await redis.dbsize())
        except RedisConnectionError:
            continue
    raise AssertionError("redis did not answer")


def _data_lost_metric() -> float:
    return REGISTRY.get_sample_value("pushgw_redis_data_lost") or 0.0


async def _readyz(client: Client) -> tuple[int, list[str]]:
    async with client.session.get(client.url + "/readyz") as response:
        return response.status, list((await response.json()).get("problems", []))


async def _post(oracle: Oracle, client: Client, event: dict[str, Any]) -> int:
    status, body = await client.post_event(event)
    oracle.record(event, status, body)
    return status


async def test_processes_restarted_on_an_empty_redis_refuse_it_and_go_on_when_its_data_returns(
    stack_for: StackFactory, redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(1000, 60), redis_timeout_s=0.5)
    oracle = Oracle(stack, "redis back empty, processes restarted, AOF restored", f"{EVENTS} events queued")
    customers = await bind_customers(oracle, 8, "epoch")
    await send_all(oracle, events_for(customers, EVENTS), concurrency=8)
    assert len(oracle.accepted) == EVENTS  # queued, not delivered: no worker runs yet
    epoch = await read_epoch(stack.redis)
    assert epoch is not None

    saved = tmp_path / "saved-redis-data"
    redis_server.stop()
    _move_contents(redis_server.directory, saved)
    redis_server.start()  # the same port, a fresh data directory: empty
    lost_at = time.monotonic()

    # a worker and gateways restarted against the empty Redis: one knowing nothing, one pinned by the setting
    stack.start_worker(name="restarted")
    pinned_settings = dataclasses.replace(stack.settings, redis_epoch=epoch.epoch_id)
    restarted = await gateway_serving(stack.settings).start()
    pinned = await gateway_serving(pinned_settings).start()
    try:
        gateways = {
            "knew the epoch": stack.client,
            "restarted": Client(stack.session, restarted.url),
            "pinned": Client(stack.session, pinned.url),
        }
        for name, client in gateways.items():
            status = await _post(oracle, client, make_event(customer_id=customers[0]))
            assert status == 503, f"the gateway that {name} answered {status} on an empty Redis"
            ready, problems = await _readyz(client)
            assert ready == 503 and any("lost its data" in problem for problem in problems), (name, problems)
        _, problems = await _readyz(gateways["restarted"])
        assert any("no data epoch" in problem for problem in problems), problems

        async def worker_waits() -> bool:
            return any(
                "waiting for redis" in record.getMessage() and "no data epoch" in record.getMessage()
                for record in caplog.records
            )

        await eventually(worker_waits, timeout_s=10)
        assert _data_lost_metric() == 1
        status, out = await pushgw(stack.settings.redis_url, "reconcile")
        report = orjson.loads(out)
        assert status == 3 and report["epoch"] is None and report["data_missing"], report
        # nothing was created in the empty Redis: no epoch, no stream, no consumer group, no key at all
        assert await _key_count(stack.redis) == 0

        # the old data comes back: its AOF restored, Redis restarted on it; nobody is restarted
        redis_server.stop()
        _wipe(redis_server.directory)
        _move_contents(saved, redis_server.directory)
        redis_server.start()
        restored_at = time.monotonic()

        async def all_accept() -> bool:
            statuses = [
                await _post(oracle, client, make_event(customer_id=customers[index]))
                for index, client in enumerate(gateways.values())
            ]
            assert 202 in statuses or set(statuses) <= {503}, statuses
            return set(statuses) == {202}

        await eventually(all_accept, timeout_s=15, step_s=0.2)
        accepting_s = time.monotonic() - restored_at
        counts = await oracle.verdict(timeout_s=30)
        assert counts.accepted >= EVENTS + len(gateways)
        assert counts.delivered == counts.accepted and counts.no_binding == 0
        assert _data_lost_metric() == 0
        assert await read_epoch(stack.redis) == epoch
        counts.recovery_s = round(time.monotonic() - lost_at, 1)
        counts.notes["restored_to_202_s"] = round(accepting_s, 1)
        status, out = await pushgw(stack.settings.redis_url, "reconcile", "--redis-epoch", epoch.epoch_id)
        assert status == 0, out
    finally:
        await restarted.stop()
        await pinned.stop()
