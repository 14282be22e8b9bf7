"""Housekeeping keeps the promises: the stream trim never drops an entry some group has not acknowledged,
dedup and status records expire on schedule, and `pushgw reconcile` proves what was accepted adds up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import RateLimit, Settings
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import Oracle
from tests.support import KEY_ID, make_event
from tests.workers.flows import StackFactory, pushgw, until_status
from workers.retries import Scheduler

pytestmark = pytest.mark.e2e


async def _ids(redis: Redis, stream: str) -> list[str]:
    entries = cast(list[tuple[str, Any]], await redis.xrange(stream, "-", "+"))
    return [entry_id for entry_id, _ in entries]


@pytest.mark.parametrize("acked", [0, 30, 60, 100])
async def test_the_trim_never_drops_an_unacknowledged_entry(
    redis: Redis, settings_for: Callable[..., Settings], acked: int
) -> None:
    """100 entries: the first `acked` read and acknowledged, the next 20 read and pending (by two
    consumers), the rest never read; a second group has read nothing. Then a group that read everything."""
    settings = settings_for()
    await ensure_groups(redis, 1)
    stream = keys.stream(0)
    ids = [str(await redis.xadd(stream, {"kind": "event", "eid": f"E{i}"})) for i in range(100)]
    await redis.xgroup_create(stream, "audit", id="0")
    await redis.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=acked + 10)
    await redis.xreadgroup(keys.GROUP, "c2", {stream: ">"}, count=10)
    if acked:
        await redis.xack(stream, keys.GROUP, *ids[:acked])
    scheduler = Scheduler(settings, redis, Scripts(settings))
    await scheduler.trim(stream)
    # the audit group has read nothing: nothing may go
    assert await _ids(redis, stream) == ids

    await redis.xgroup_destroy(stream, "audit")
    await scheduler.trim(stream)
    kept = await _ids(redis, stream)
    assert set(ids[acked:]) <= set(kept), "an entry not acknowledged by every group was trimmed"
    pending = await redis.xpending(stream, keys.GROUP)
    assert pending["pending"] == min(acked + 20, 100) - acked


async def test_dedup_status_and_signature_records_expire_on_schedule(
    stack_for: StackFactory,
) -> None:
    stack = await stack_for(workers=1, rate_limit=RateLimit(1000, 60))
    oracle = Oracle(stack, "record expiry", "10 events")
    customers = await bind_customers(oracle, 2, "ttl")
    await send_all(oracle, events_for(customers, 10))
    await oracle.verdict()
    ttl_s = stack.settings.event_ttl_s
    for event_id, customer in oracle.accepted.items():
        record = keys.event(keys.shard_of(customer, stack.settings.shards), KEY_ID, event_id)
        remaining = await stack.redis.ttl(record)
        assert ttl_s - 60 <= remaining <= ttl_s, "the status and dedup record lives event_ttl_s"
    nonces = [key async for key in stack.redis.scan_iter(match=keys.nonce(0, "*", "*"))]
    assert nonces, "the signed binding writes were remembered for replay protection"
    for key in nonces:
        remaining = await stack.redis.ttl(key)
        assert 0 < remaining <= 2 * stack.settings.signature_window_s
    rate_logs = [key async for key in stack.redis.scan_iter(match=keys.rate_log(0, "*"))]
    for key in rate_logs:
        assert 0 < await stack.redis.pttl(key) <= 60_000


async def test_reconcile_adds_up_and_flags_an_orphan(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(3, 2))
    oracle = Oracle(stack, "reconcile", "30 events, 3 per customer queued, the rest digested")
    customers = await bind_customers(oracle, 5, "recon")
    await send_all(oracle, events_for(customers, 30))
    status, out = await pushgw(stack.settings.redis_url, "reconcile")
    report = orjson.loads(out)
    assert status == 0, report
    assert report["accepted"] == len(oracle.accepted) == 30
    assert report["in_flight"] == 30 and report["by_status"] == {"digested": 15, "queued": 15}

    stack.start_worker(name="recon")
    await oracle.verdict(timeout_s=90)
    status, out = await pushgw(stack.settings.redis_url, "reconcile")
    report = orjson.loads(out)
    assert (status, report["adds_up"], report["in_flight"]) == (0, True, 0)
    assert report["by_status"] == {"delivered": 30}

    # an accepted event whose stream entry vanished (what a trim bug or a manual XDEL would do)
    await stack.stop_workers()
    lost = make_event(customer_id=customers[0], event_id="CBS-LOST-1")
    await stack.client.call("PUT", "/v1/bindings/" + customers[0], {"openid": "oUser_recon_000"})
    await oracle.post(lost)
    entries = cast(list[tuple[str, dict[str, str]]], await stack.redis.xrange(keys.stream(0), "-", "+"))
    await stack.redis.xdel(keys.stream(0), *[i for i, f in entries if f.get("eid") == "CBS-LOST-1"])
    status, out = await pushgw(stack.settings.redis_url, "reconcile")
    report = orjson.loads(out)
    assert status == 1 and report["adds_up"] is False
    assert report["orphaned"] == [f"{KEY_ID}:CBS-LOST-1"]
    oracle.accepted.pop("CBS-LOST-1")  # lost on purpose: the oracle of this test is reconcile itself


async def test_reconcile_counts_a_replayed_old_event_in_flight_not_stuck(stack_for: StackFactory) -> None:
    """The runbook's "replay what aged out": the replayed event's age counts from the replay, in the
    worker (PUSHGW_MAX_AGE_S) and in reconcile alike."""
    stack = await stack_for(max_attempts=1)
    await stack.client.bind("C-old", "oUser_old")
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}]})
    event = make_event(customer_id="C-old")
    await stack.client.post_event(event)
    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert view["last_error"] == "max_attempts: -1"
    await stack.stop_workers()
    record = keys.event(0, KEY_ID, event["event_id"])
    hours_ago_ms = int(time.time() * 1000) - int(6.5 * 3600 * 1000)  # past max age (6 h) and its grace
    await stack.redis.hset(record, "accepted_ms", str(hours_ago_ms))

    status, out = await pushgw(stack.settings.redis_url, "dlq", "replay", "--event-id", event["event_id"])
    assert (status, orjson.loads(out)) == (0, {"replayed": 1})
    status, out = await pushgw(stack.settings.redis_url, "reconcile")
    report = orjson.loads(out)
    assert (status, report["stuck"], report["in_flight"]) == (0, [], 1), report
