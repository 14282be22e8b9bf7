"""A primary SIGKILLed under load: its replica takes over, the gateway answers 503 (never 202 for what it did
not store) until it can keep events again, and recovers by itself; afterwards every acknowledged event is
delivered exactly once, or it is counted as lost.

Redis replication is asynchronous: an event the old primary acknowledged (AOF-fsynced on its own disk) just
before it died may not have reached its replica, and the promoted replica does not have it. The test measures
that loss window instead of hiding it: every lost event must have been acknowledged before the kill, by the
killed primary. With `PUSHGW_REDIS_WAIT_REPLICAS=1` the gateway answers only once the replica holds the event,
and nothing acknowledged is lost. The figures go to build/cluster-failover-<server>.json.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.cluster.conftest import SHARDS, node_of
from tests.cluster.local import LocalCluster
from tests.cluster.test_cluster_flow import customer_per_shard, messages_of, openid, statuses
from tests.conftest import Stack
from tests.support import eventually, make_event, signed_headers

pytestmark = pytest.mark.e2e
REPORT = Path(__file__).resolve().parents[2] / "build" / "cluster-failover.json"
ACCEPTED = (200, 202)
POSTERS = 16
PACE_S = 0.04  # each sender's pause between events: a few hundred events/s, so the drain stays short
_skew = itertools.count()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A cluster of this test's own: it kills one of its primaries."""
    local = LocalCluster(tmp_path)
    try:
        local.start()
        yield local
    finally:
        local.stop()
        gc.collect()  # within this test's teardown, where its filterwarnings mark applies


@dataclass
class Sent:
    event: dict[str, Any]
    answers: list[tuple[float, int]] = field(default_factory=list)  # (monotonic s, HTTP status; 0: none)

    @property
    def acknowledged_at(self) -> float | None:
        return next((at for at, status in self.answers if status in ACCEPTED), None)


@dataclass
class Load:
    """Core banking under load: POSTERS senders, each posting a new event once the last was answered 2xx/4xx,
    retrying the same body (a new signature) on 503 or no answer."""

    stack: Stack
    customers: list[str]
    sent: list[Sent] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        await asyncio.gather(*(self._sender(index) for index in range(POSTERS)))

    async def _sender(self, index: int) -> None:
        for number in itertools.count():
            if self.stopping.is_set():
                return
            customer = self.customers[(index + number * POSTERS) % len(self.customers)]
            sent = Sent(make_event(customer_id=customer, type="debit", amount="1.00"))
            self.sent.append(sent)
            await self._post(sent)
            await asyncio.sleep(PACE_S)

    async def _post(self, sent: Sent) -> None:
        body = orjson.dumps(sent.event)
        while True:
            headers = signed_headers(body, at_s=int(time.time()) - next(_skew) % 200)
            try:
                status, _ = await self.stack.client.call("POST", "/v1/events", raw=body, headers=headers)
            except (TimeoutError, OSError):
                status = 0
            sent.answers.append((time.monotonic(), status))
            if status in ACCEPTED or 400 <= status < 500:
                return
            await asyncio.sleep(0.05)

    def refused_between(self, start: float, end: float) -> list[float]:
        return [at for s in self.sent for at, status in s.answers if status >= 500 and start <= at <= end]


async def ready(stack: Stack) -> bool:
    status, _ = await stack.client.call("GET", "/readyz")
    return status == 200


# redis-py's cluster client drops the ClusterNode of a failed primary from its table while commands still
# hold connections to it; those are garbage-collected unclosed (a ResourceWarning, raised as unraisable)
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("wait_replicas", [0, 1])
async def test_a_killed_primary_fails_over_and_nothing_acknowledged_is_silently_gone(
    stack_for: Callable[..., Awaitable[Stack]], redis: RedisCluster, cluster: LocalCluster, wait_replicas: int
) -> None:
    stack = await stack_for(workers=2, redis_wait_replicas=wait_replicas, rate_limit=RateLimit(100_000, 60))
    customers = customer_per_shard("fo") + customer_per_shard("fo2")
    for customer in customers:
        await stack.client.bind(customer, openid(customer))
    victim = node_of(redis, keys.stream(0))
    victim_shards = {s for s in range(SHARDS) if node_of(redis, keys.stream(s)).name == victim.name}

    load = Load(stack, customers)
    running = asyncio.create_task(load.run())
    await eventually(lambda: _acknowledged_at_least(load, 100))
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.kill, int(victim.port))  # it waits for the process: not in the loop
    await asyncio.to_thread(_wait_promoted, cluster, int(victim.port))
    promoted_at = time.monotonic()
    # back as the new primary's replica, as its supervisor would do (with WAIT 1 the new primary needs one)
    await asyncio.to_thread(cluster.start_node, int(victim.port))
    await eventually(lambda: ready(stack), timeout_s=30)
    ready_at = time.monotonic()
    await eventually(lambda: _acknowledged_since(load, ready_at, 50), timeout_s=30)
    recovered_at = _first_ack_after_refusals(load, killed_at)
    await asyncio.to_thread(cluster.wait_healthy)
    load.stopping.set()
    await running

    acknowledged = [s for s in load.sent if s.acknowledged_at is not None]
    ids = [s.event["event_id"] for s in acknowledged]
    found = await statuses(stack, ids)
    lost = [s for s, status in zip(acknowledged, found, strict=True) if status is None]
    kept = [s for s, status in zip(acknowledged, found, strict=True) if status is not None]
    await _until_delivered(stack, [s.event["event_id"] for s in kept])
    shown = await messages_of(stack, customers)
    doubled = {c: ids for c, ids in shown.items() if len(ids) != len(set(ids))}
    refused = load.refused_between(killed_at, time.monotonic())
    figures = {
        "server": os.environ.get("PUSHGW_TEST_REDIS") or "redis-server",
        "wait_replicas": wait_replicas,
        "acknowledged": len(acknowledged),
        "lost": len(lost),
        "lost_acknowledged_ms_before_kill": sorted(
            round((killed_at - (s.acknowledged_at or 0)) * 1000) for s in lost
        ),
        "refused_503": len(refused),
        "promoted_after_s": round(promoted_at - killed_at, 2),
        "accepting_again_after_s": round(recovered_at - killed_at, 2),
        "last_503_after_s": round(max(refused) - killed_at, 2) if refused else 0.0,
    }
    _report(figures)
    assert not doubled
    assert refused, "no 503 while a primary was down: the kill did not hit the load"
    for sent in lost:  # only an acknowledgement of the dead primary, from before it died, can be missing
        assert (sent.acknowledged_at or 0) < killed_at
        assert keys.shard_of(sent.event["customer_id"], SHARDS) in victim_shards
    if wait_replicas:
        assert not lost


def _acknowledged_at_least(load: Load, count: int) -> Awaitable[bool]:
    async def check() -> bool:
        return sum(1 for s in load.sent if s.acknowledged_at is not None) >= count

    return check()


def _acknowledged_since(load: Load, since: float, count: int) -> Awaitable[bool]:
    async def check() -> bool:
        return sum(1 for s in load.sent if (s.acknowledged_at or 0) >= since) >= count

    return check()


def _first_ack_after_refusals(load: Load, killed_at: float) -> float:
    """When the gateway accepted again: the first acknowledgement after the last 503 since the kill."""
    last_refusal = max(load.refused_between(killed_at, time.monotonic()), default=killed_at)
    acks = [at for s in load.sent for at, status in s.answers if status in ACCEPTED and at > last_refusal]
    return min(acks, default=last_refusal)


def _wait_promoted(cluster: LocalCluster, killed_port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(cluster.primary_ports()) < cluster.primaries or not _all_ok(cluster):
        if time.monotonic() > deadline:
            raise AssertionError(f"no replica took over from the primary on {killed_port}")
        time.sleep(0.05)


def _all_ok(cluster: LocalCluster) -> bool:
    try:
        return cluster.healthy_state()
    except OSError:
        return False


async def _until_delivered(stack: Stack, event_ids: list[str]) -> None:
    async def done() -> bool:
        return all(status == "delivered" for status in await statuses(stack, event_ids))

    try:
        await eventually(done, timeout_s=60)
    except AssertionError:
        found = Counter(await statuses(stack, event_ids))
        raise AssertionError(f"not all delivered: {dict(found)}") from None


def _report(figures: dict[str, Any]) -> None:
    print("cluster failover:", json.dumps(figures))
    REPORT.parent.mkdir(exist_ok=True)
    path = REPORT.with_name(f"cluster-failover-{figures['server']}-wait{figures['wait_replicas']}.json")
    path.write_text(json.dumps(figures, indent=2))
