"""The ingest script's limiter (the packed rate log of lib/rate_log.lua), its held-event bookkeeping and its
amortised expiry and timeline trim, against a real Redis through the typed `Scripts` wrappers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.event import payload_hash
from gateway.core.scripts import IngestArgs, Scripts, rate_log_times, rate_log_value
from gateway.core.settings import RateLimit, Settings

SRC = "cbs"
CID = "C-limiter"
SHARD = 0
WINDOW_MS = 60_000
TTL_MS = 3 * 86400 * 1000

Build = Callable[..., Scripts]


def _args(event_id: str, *, critical: bool = False, hash_end: str = "") -> IngestArgs:
    """An event of the customer; `hash_end` replaces the end of its payload hash (a changed body)."""
    canonical = orjson.dumps({"event_id": event_id, "customer_id": CID})
    digest = payload_hash(canonical)
    return IngestArgs(
        SRC,
        event_id,
        CID,
        canonical,
        digest[: len(digest) - len(hash_end)] + hash_end,
        event_type="debit",
        amount_cents="100",
        critical=critical,
        summary=(("type", "debit"),),
    )


@pytest.fixture
def build(settings_for: Callable[..., Settings]) -> Build:
    def make(count: int = 5, policy: str = "digest") -> Scripts:
        return Scripts(settings_for(rate_limit=RateLimit(count, WINDOW_MS // 1000), rate_policy=policy))

    return make


async def _admissions(redis: Redis) -> list[int]:
    return rate_log_times(await redis.get(keys.rate_log(SHARD, CID)))


async def _accepted_ms(redis: Redis, event_ids: list[str]) -> dict[str, int]:
    async with redis.pipeline(transaction=False) as pipe:
        for event_id in event_ids:
            pipe.hget(keys.event(SHARD, SRC, event_id), "accepted_ms")
        return {event_id: int(at) for event_id, at in zip(event_ids, await pipe.execute(), strict=True)}


async def _server_ms(redis: Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1000 + int(micros) // 1000


@pytest.mark.parametrize("count", [1, 5])
async def test_concurrent_burst_admits_exactly_the_limit_and_holds_the_rest_until_the_oldest_reopens(
    redis: Redis, build: Build, count: int
) -> None:
    scripts = build(count)
    await scripts.load(redis)
    ids = [f"E{i}" for i in range(40)]
    answers = await asyncio.gather(*(scripts.ingest(redis, _args(event_id)) for event_id in ids))
    statuses = [status for status, _ in answers]
    assert statuses.count("queued") == count
    assert statuses.count("digested") == len(ids) - count
    queued = [event_id for event_id, status in zip(ids, statuses, strict=True) if status == "queued"]
    admitted = sorted((await _accepted_ms(redis, queued)).values())
    assert await _admissions(redis) == admitted
    assert await redis.xlen(keys.stream(SHARD)) == count
    assert await redis.llen(keys.digest_held(SHARD, CID)) == len(ids) - count
    assert await redis.zscore(keys.digest_due(SHARD), CID) == admitted[0] + WINDOW_MS
    assert 0 < await redis.pttl(keys.rate_log(SHARD, CID)) <= WINDOW_MS


async def test_concurrent_burst_with_reject_answers_the_time_until_the_oldest_admission_expires(
    redis: Redis, build: Build
) -> None:
    scripts = build(3, "reject")
    await scripts.load(redis)
    ids = [f"E{i}" for i in range(30)]
    before_ms = await _server_ms(redis)
    answers = await asyncio.gather(*(scripts.ingest(redis, _args(event_id)) for event_id in ids))
    after_ms = await _server_ms(redis)
    assert sorted(status for status, _ in answers) == ["queued"] * 3 + ["rate_limited"] * 27
    oldest_ms = (await _admissions(redis))[0]
    for status, retry_after_ms in answers:
        if status == "rate_limited":
            asked_ms = oldest_ms + WINDOW_MS - int(retry_after_ms)  # Redis TIME of that call
            assert before_ms <= asked_ms <= after_ms
    rejected = [event_id for event_id, (status, _) in zip(ids, answers, strict=True) if status != "queued"]
    for event_id in rejected:  # nothing of a rejected event is kept: it may be sent again
        assert not await redis.exists(keys.event(SHARD, SRC, event_id))


async def test_the_window_slides_with_each_admission(redis: Redis, build: Build) -> None:
    scripts = build(2, "reject")
    log = keys.rate_log(SHARD, CID)
    now_ms = await _server_ms(redis)
    # two admissions: one a window and a bit ago (out of it now), one half a window ago
    await redis.set(log, rate_log_value([now_ms - WINDOW_MS - 5, now_ms - WINDOW_MS // 2]), px=WINDOW_MS)
    assert (await scripts.ingest(redis, _args("E1")))[0] == "queued"  # one in the window: room for one
    times = await _admissions(redis)
    assert len(times) == 2  # the expired one made room, the limit's count is all that is kept
    assert times[0] == now_ms - WINDOW_MS // 2
    status, retry_after_ms = await scripts.ingest(redis, _args("E2"))
    assert status == "rate_limited"  # not a fixed window: the half-window-old admission still counts
    asked_ms = times[0] + WINDOW_MS - int(retry_after_ms)
    assert now_ms <= asked_ms <= await _server_ms(redis)


async def test_an_admission_a_window_ago_is_out_of_it(redis: Redis, build: Build) -> None:
    scripts = build(1, "reject")
    log = keys.rate_log(SHARD, CID)
    # far enough in the future that it stays in the window, then exactly one window before now
    await redis.set(log, rate_log_value([await _server_ms(redis) + 10_000]), px=WINDOW_MS)
    assert (await scripts.ingest(redis, _args("E1")))[0] == "rate_limited"
    await redis.set(log, rate_log_value([await _server_ms(redis) - WINDOW_MS]), px=WINDOW_MS)
    assert (await scripts.ingest(redis, _args("E2")))[0] == "queued"


async def test_a_lowered_limit_waits_for_enough_admissions_to_leave_the_window(
    redis: Redis, build: Build
) -> None:
    """A log written under a higher limit (the setting changed): the limit-th latest admission decides."""
    scripts = build(2)
    now_ms = await _server_ms(redis)
    kept = [now_ms - 4000, now_ms - 3000, now_ms - 2000, now_ms - 1000]
    await redis.set(keys.rate_log(SHARD, CID), rate_log_value(kept), px=WINDOW_MS)
    assert (await scripts.ingest(redis, _args("E1")))[0] == "digested"
    assert await redis.zscore(keys.digest_due(SHARD), CID) == now_ms - 2000 + WINDOW_MS


async def test_a_critical_event_bypasses_the_full_limiter_and_leaves_it_alone(
    redis: Redis, build: Build
) -> None:
    scripts = build(1, "reject")
    assert (await scripts.ingest(redis, _args("E1")))[0] == "queued"
    log_before = await redis.get(keys.rate_log(SHARD, CID))
    status, entry_id = await scripts.ingest(redis, _args("E2", critical=True))
    assert status == "queued"
    assert await redis.xlen(keys.stream(SHARD, critical=True)) == 1
    assert await redis.xrange(keys.stream(SHARD, critical=True), entry_id, entry_id)
    assert await redis.get(keys.rate_log(SHARD, CID)) == log_before


async def test_held_events_keep_the_first_due_time_and_a_new_hold_after_a_flush_schedules_again(
    redis: Redis, build: Build
) -> None:
    scripts = build(1)
    statuses = [(await scripts.ingest(redis, _args(f"E{i}")))[0] for i in range(3)]
    assert statuses == ["queued", "digested", "digested"]
    [admitted_ms] = await _admissions(redis)
    assert await redis.zscore(keys.digest_due(SHARD), CID) == admitted_ms + WINDOW_MS
    await redis.set(keys.rate_log(SHARD, CID), rate_log_value([admitted_ms - WINDOW_MS]), px=WINDOW_MS)
    assert await scripts.flush_digest(redis, SHARD, CID, 50) == 2
    assert await redis.zscore(keys.digest_due(SHARD), CID) is None
    [digest_ms] = await _admissions(redis)  # the digest counts as one message
    assert (await scripts.ingest(redis, _args("E3")))[0] == "digested"
    assert await redis.zscore(keys.digest_due(SHARD), CID) == digest_ms + WINDOW_MS


async def test_flush_digest_reschedules_the_rest_at_its_own_admission_plus_the_window(
    redis: Redis, build: Build
) -> None:
    scripts = build(1)
    for i in range(4):
        await scripts.ingest(redis, _args(f"E{i}"))
    [admitted_ms] = await _admissions(redis)
    await redis.set(keys.rate_log(SHARD, CID), rate_log_value([admitted_ms - WINDOW_MS]), px=WINDOW_MS)
    assert await scripts.flush_digest(redis, SHARD, CID, 2) == 2
    [digest_ms] = await _admissions(redis)
    assert await redis.zscore(keys.digest_due(SHARD), CID) == digest_ms + WINDOW_MS
    assert await scripts.flush_digest(redis, SHARD, CID, 2) == 0  # the window is full again
    assert await redis.llen(keys.digest_held(SHARD, CID)) == 1


async def test_the_timeline_is_trimmed_and_kept_alive_only_when_less_than_the_ttl_is_left(
    redis: Redis, build: Build
) -> None:
    scripts = build(100)
    timeline = keys.customer_events(SHARD, CID)
    stale_ms = await _server_ms(redis) - TTL_MS - 1000
    await redis.zadd(timeline, {f"{SRC}:old-{i}": stale_ms + i for i in range(20)})
    await redis.pexpire(timeline, TTL_MS + 60_000)  # refreshed a minute ago
    for i in range(5):
        await scripts.ingest(redis, _args(f"E{i}"))
    assert await redis.zcard(timeline) == 25  # no write of the expiry, no trim
    assert TTL_MS <= await redis.pttl(timeline) <= TTL_MS + 60_000
    await redis.pexpire(timeline, TTL_MS - 1)  # a sixteenth of the ttl went by
    await scripts.ingest(redis, _args("E-late"))
    members = await redis.zrange(timeline, 0, -1)
    assert members == [f"{SRC}:E{i}" for i in range(5)] + [f"{SRC}:E-late"]
    assert TTL_MS < await redis.pttl(timeline) <= TTL_MS + TTL_MS // 16


async def test_a_new_timeline_and_held_list_get_their_expiry(redis: Redis, build: Build) -> None:
    scripts = build(1)
    for i in range(2):
        await scripts.ingest(redis, _args(f"E{i}"))
    for key in (keys.customer_events(SHARD, CID), keys.digest_held(SHARD, CID)):
        assert TTL_MS < await redis.pttl(key) <= TTL_MS + TTL_MS // 16, key


async def test_the_held_list_expiry_is_pushed_out_when_less_than_the_ttl_is_left(
    redis: Redis, build: Build
) -> None:
    scripts = build(1)
    await scripts.ingest(redis, _args("E0"))
    await scripts.ingest(redis, _args("E1"))
    held = keys.digest_held(SHARD, CID)
    await redis.pexpire(held, TTL_MS - 1)
    await scripts.ingest(redis, _args("E2"))
    assert TTL_MS < await redis.pttl(held) <= TTL_MS + TTL_MS // 16
    assert await redis.llen(held) == 2


async def test_dedup_answers_before_the_limiter(redis: Redis, build: Build) -> None:
    scripts = build(1, "reject")
    assert (await scripts.ingest(redis, _args("E1")))[0] == "queued"
    assert await scripts.ingest(redis, _args("E1")) == ["duplicate", "queued"]
    assert await scripts.ingest(redis, _args("E1", hash_end="x")) == ["conflict", ""]
    assert len(await _admissions(redis)) == 1


async def test_events_in_one_call_answer_as_if_sent_one_after_the_other(redis: Redis, build: Build) -> None:
    """The gateway sends many events in one script call: each answers what it would alone, in order (a
    repeat in the same call is a duplicate, a changed body a conflict, the limit counts the call's own)."""
    scripts = build(count=3)
    events = [_args(f"E{i}") for i in range(5)]
    events += [_args("E0"), _args("E1", hash_end="00"), _args("E9", critical=True)]
    answers = await scripts.ingest_many(redis, events)
    statuses = answers[::2]
    assert statuses == ["queued"] * 3 + ["digested"] * 2 + ["duplicate", "conflict", "queued"]
    assert answers[11] == "queued"  # the duplicate names the first one's status
    assert len(await _admissions(redis)) == 3
    # the same answers as single calls on an emptied Redis
    await redis.flushdb()
    assert [(await scripts.ingest(redis, event))[0] for event in events] == statuses


async def test_events_of_every_shard_in_one_call_on_one_redis(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    """On one Redis (not a cluster) a call may hold events of several shards: each gets its shard's keys."""
    scripts = Scripts(settings_for(shards=4))
    events = [
        IngestArgs(SRC, f"S{i}", f"C{i}", b"{}", f"h{i}", "debit", "100", False, (("type", "debit"),))
        for i in range(12)
    ]
    answers = await scripts.ingest_many(redis, events)
    assert answers[::2] == ["queued"] * 12
    for event in events:
        shard = keys.shard_of(event.customer_id, 4)
        assert await redis.hget(keys.event(shard, SRC, event.event_id), "status") == "queued"
    added = [await redis.xlen(keys.stream(shard)) for shard in range(4)]
    assert sum(added) == 12 and all(added)
