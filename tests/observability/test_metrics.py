"""Metric declarations follow the conventions, the SLO thresholds are histogram buckets, and the queue
monitor reports what Redis holds."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
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
    started = time.monotonic()
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    # entries of known age (an entry id's time is when it was added): 90 s, 30 s and 10 s old
    for number, age_s in enumerate((90, 30, 10)):
        await redis.xadd(stream, {"n": str(number)}, id=f"{now_ms - age_s * 1000}-0")
    await redis.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=2)  # the 90 s and 30 s ones are pending
    await redis.zadd(keys.retries(0), {"a": 1, "b": 2})
    await redis.xadd(keys.dead_letters(0), {"reason": "test"})
    await redis.zadd(keys.digest_due(0), {"C1": 1})

    snapshot = await QueueMonitor(redis, 2).sample()
    since_s = time.monotonic() - started + 0.01  # how much older they can have grown (and ms rounding)

    first, second = snapshot.shards
    assert (first.stream_length, first.lag, first.pending) == (3, 1, 2)
    assert (first.consumers, first.active_consumers) == (1, 1)
    assert (first.scheduled_retries, first.dead_letters, first.digests_held) == (2, 1, 1)
    assert 90 <= first.oldest_pending_age_s <= 90 + since_s, first.oldest_pending_age_s
    assert 10 <= first.oldest_unread_age_s <= 10 + since_s, first.oldest_unread_age_s
    assert (second.stream_length, second.lag, second.pending, second.consumers) == (0, 0, 0, 0)
    assert second.oldest_pending_age_s == second.oldest_unread_age_s == 0.0
    assert snapshot.redis.used_memory_bytes > 0 and snapshot.redis.aof_enabled
    assert snapshot.redis.aof_last_write_ok

    metrics.QUEUE.update(snapshot)
    text = generate_latest().decode()
    assert 'pushgw_consumer_lag{shard="0"} 1.0' in text
    assert 'pushgw_pending_entries{shard="1"} 0.0' in text
    assert "pushgw_redis_up 1.0" in text
    exported = {
        (sample.name, sample.labels.get("shard")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert exported["pushgw_oldest_pending_age_seconds", "0"] == first.oldest_pending_age_s
    assert exported["pushgw_oldest_unread_age_seconds", "0"] == first.oldest_unread_age_s


async def test_unreadable_redis_drops_the_queue_series() -> None:
    metrics.QUEUE.update(None)
    text = generate_latest().decode()
    assert "pushgw_redis_up 0.0" in text
    assert "pushgw_consumer_lag{" not in text
