"""Metric declarations follow the conventions, the SLO thresholds are histogram buckets, and the queue
monitor reports what Redis holds."""

from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from redis.asyncio import Redis

from gateway.core import keys, metrics
from gateway.core.redis import ensure_groups
from workers.queue_monitor import QueueMonitor


def test_slo_thresholds_are_bucket_bounds() -> None:
    assert metrics.SLO_DELIVERED_WITHIN_S in metrics.DELIVERY_BUCKETS_S
    assert metrics.SLO_DELIVERED_FAST_S in metrics.DELIVERY_BUCKETS_S
    assert metrics.SLO_INGRESS_WITHIN_S in metrics.LATENCY_BUCKETS_S


def test_names_follow_the_conventions() -> None:
    for family in REGISTRY.collect():
        if not family.name.startswith("pushgw_"):
            continue
        assert family.name == family.name.lower(), family.name
        if family.type == "counter":
            assert not family.name.endswith("_total"), family.name  # the client appends _total
        for sample in family.samples:
            assert not ({"event_id", "customer_id", "openid", "account"} & set(sample.labels)), sample


async def test_queue_monitor_reads_redis(redis: Redis) -> None:
    await ensure_groups(redis, 2)
    stream = keys.stream(0)
    for number in range(3):
        await redis.xadd(stream, {"n": str(number)})
    await redis.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=1)
    await redis.zadd(keys.retries(0), {"a": 1, "b": 2})
    await redis.xadd(keys.dead_letters(0), {"reason": "test"})
    await redis.zadd(keys.digest_due(0), {"C1": 1})

    snapshot = await QueueMonitor(redis, 2).sample()

    first, second = snapshot.shards
    assert (first.stream_length, first.lag, first.pending) == (3, 2, 1)
    assert (first.consumers, first.active_consumers) == (1, 1)
    assert (first.scheduled_retries, first.dead_letters, first.digests_held) == (2, 1, 1)
    assert first.oldest_pending_age_s >= 0 and first.oldest_unread_age_s >= 0
    assert (second.stream_length, second.lag, second.pending, second.consumers) == (0, 0, 0, 0)
    assert second.oldest_unread_age_s == 0.0
    assert snapshot.redis.used_memory_bytes > 0 and snapshot.redis.aof_enabled
    assert snapshot.redis.aof_last_write_ok

    metrics.QUEUE.update(snapshot)
    text = generate_latest().decode()
    assert 'pushgw_consumer_lag{shard="0"} 2.0' in text
    assert 'pushgw_pending_entries{shard="1"} 0.0' in text
    assert "pushgw_redis_up 1.0" in text


async def test_unreadable_redis_drops_the_queue_series() -> None:
    metrics.QUEUE.update(None)
    text = generate_latest().decode()
    assert "pushgw_redis_up 0.0" in text
    assert "pushgw_consumer_lag{" not in text
