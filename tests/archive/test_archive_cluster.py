"""The archive on a real Redis Cluster (the cluster tests' fixtures: three primaries, eight shards): each
shard's archive stream shares its slot with the shard's records, so the finish scripts hand final states over
on every primary; the archiver reads, reclaims and acknowledges shard by shard, and the backlog adds up
across slots. Every final state lands in PostgreSQL once."""

from __future__ import annotations

from typing import Any, cast

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.core import keys, metrics
from gateway.core.archive import backlog
from gateway.core.redis import ensure_groups
from gateway.core.settings import RateLimit
from tests.archive.helpers import archive_backlog, sample, until_archived
from tests.cluster.conftest import SHARDS, cluster, redis, settings_for  # noqa: F401 - fixtures, by name
from tests.cluster.test_cluster_flow import customer_per_shard
from tests.conftest import Stack
from tests.support import KEY_ID, eventually, make_event
from tests.workers.flows import StackFactory
from workers import archive

pytestmark = pytest.mark.e2e
PER_SHARD = 6  # each shard: 3 suppressed at ingest, 3 delivered by the worker


def _customers() -> list[str]:
    return customer_per_shard("arcl")


async def _final_at_ingest(stack: Stack, customers: list[str]) -> list[dict[str, Any]]:
    muted = []
    for customer in customers:
        await stack.client.bind(customer, f"o{customer.replace('-', '_')}")
        status, _ = await stack.client.call(
            "PUT", f"/v1/customers/{customer}/preferences", {"muted_types": ["refund"]}
        )
        assert status == 200
        muted += [make_event(customer_id=customer, type="refund") for _ in range(PER_SHARD // 2)]
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": muted})
    assert status == 200 and {r["status"] for r in body["results"]} == {"suppressed"}
    return muted


def _primary_of(client: RedisCluster, key: str) -> str:
    node = client.get_node_from_key(key)
    assert node is not None, key
    return str(node.name)


async def test_final_states_on_every_primary_are_archived_once_each(
    stack_for: StackFactory, archive_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backlog, "SAMPLE_S", 0.2)  # the gateway's sampler
    monkeypatch.setattr(archive, "SAMPLE_S", 0.2)  # the worker's
    stack = await stack_for(workers=0, archive_url=archive_url, rate_limit=RateLimit(100_000, 60))
    client = cast(RedisCluster, stack.redis)
    for shard in range(SHARDS):  # the hash tag: a shard's archive stream sits in its records' slot
        slots = {client.keyslot(key) for key in (keys.archive(shard), keys.event(shard, KEY_ID, "CBS-1"))}
        assert len(slots) == 1
    assert len({_primary_of(client, keys.archive(shard)) for shard in range(SHARDS)}) == 3
    await ensure_groups(stack.redis, SHARDS)
    customers = _customers()
    muted = await _final_at_ingest(stack, customers)
    for shard in range(SHARDS):  # a consumer read an entry of every shard and died: pending, slot by slot
        assert await stack.redis.xreadgroup(keys.ARCHIVE_GROUP, "died", {keys.archive(shard): ">"}, count=1)
    waiting, lag_s = await backlog.backlog(stack.redis, SHARDS)
    assert waiting == len(muted) and lag_s >= 0

    stack.start_worker(name="w-arcl")  # claims the dead one's entries once idle, on each shard's node
    delivered = [make_event(customer_id=customer) for customer in customers for _ in range(PER_SHARD // 2)]
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": delivered})
    assert status == 200 and {r["status"] for r in body["results"]} == {"queued"}
    events = muted + delivered
    rows = await until_archived(stack.redis, archive_url, len(events), shards=SHARDS)

    assert sorted(row["event_id"] for row in rows) == sorted(event["event_id"] for event in events)
    by_id = {event["event_id"]: event for event in events}
    for row in rows:
        shard = keys.shard_of(by_id[row["event_id"]]["customer_id"], SHARDS)
        record = cast(dict[str, str], await stack.redis.hgetall(keys.event(shard, KEY_ID, row["event_id"])))
        assert (row["status"], row["version"]) == (record["status"], int(record["arch_v"]))
    assert {row["status"] for row in rows} == {"suppressed", "delivered"}
    for shard in range(SHARDS):  # one entry per final state, on the shard's own stream
        info: Any = await stack.redis.xinfo_stream(keys.archive(shard))
        assert info["entries-added"] == PER_SHARD, shard
    assert await archive_backlog(stack.redis, SHARDS) == 0
    assert await backlog.backlog(stack.redis, SHARDS) == (0, 0.0)

    async def gauges_clear() -> bool:
        return sample(metrics.ARCHIVE_BACKLOG) == 0 and sample(metrics.ARCHIVE_LAG) == 0

    await eventually(gauges_clear, timeout_s=10)
