"""Each Lua script against a real Redis, through the typed `Scripts` wrappers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.event import payload_hash
from gateway.core.redis import ensure_groups
from gateway.core.scripts import EntryOutcome, IngestArgs, Scripts, rate_log_times, rate_log_value
from gateway.core.settings import RateLimit, Settings
from tests.workers.flows import Entries, scored

SRC = "cbs"
CID = "C-scripts"
SHARD = 0
CONSUMER = "test-consumer"


def _args(event_id: str, *, body: str = "a", customer: str = CID) -> IngestArgs:
    canonical = orjson.dumps({"event_id": event_id, "customer_id": customer, "body": body})
    return IngestArgs(
        SRC,
        event_id,
        customer,
        canonical,
        payload_hash(canonical),
        event_type="debit",
        amount_cents="100",
        critical=False,
        summary=(),
    )


@pytest.fixture
def build(settings_for: Callable[..., Settings]) -> Callable[..., tuple[Settings, Scripts]]:
    def make(**overrides: Any) -> tuple[Settings, Scripts]:
        settings = settings_for(**overrides)
        return settings, Scripts(settings)

    return make


async def _stream(redis: Redis) -> Entries:
    return cast(Entries, await redis.xrange(keys.stream(SHARD)))


async def _read(redis: Redis) -> Entries:
    """Read every new entry as one consumer, so they sit in its pending list."""
    await ensure_groups(redis, 1)
    batch: Any = await redis.xreadgroup(keys.GROUP, CONSUMER, {keys.stream(SHARD): ">"}, count=100)
    return cast(Entries, batch[0][1]) if batch else []


async def _members(redis: Redis, key: str) -> list[str]:
    return [member for member, _ in await scored(redis, key)]


async def _pending(redis: Redis) -> int:
    summary = await redis.xpending(keys.stream(SHARD), keys.GROUP)
    return int(summary["pending"])


def _record(event_id: str) -> str:
    return keys.event(SHARD, SRC, event_id)


# ingest


async def test_ingest_queues_the_event_with_its_record(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build(rate_limit=RateLimit(5, 60))
    status, entry_id = await scripts.ingest(redis, _args("E1"))
    assert status == "queued"
    [(stream_id, fields)] = await _stream(redis)
    assert stream_id == entry_id
    assert fields["kind"] == "event"
    assert (fields["src"], fields["eid"], fields["cid"], fields["att"]) == (SRC, "E1", CID, "0")
    assert orjson.loads(fields["ev"])["event_id"] == "E1"
    record = await redis.hgetall(_record("E1"))
    assert record["status"] == "queued"
    assert record["attempts"] == "0"
    assert record["customer_id"] == CID
    assert 0 < await redis.ttl(_record("E1")) <= 3 * 86400
    assert len(rate_log_times(await redis.get(keys.rate_log(SHARD, CID)))) == 1


async def test_ingest_same_body_is_a_duplicate_with_the_current_status(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build()
    await scripts.ingest(redis, _args("E1"))
    await redis.hset(_record("E1"), "status", "delivered")
    assert await scripts.ingest(redis, _args("E1")) == ["duplicate", "delivered"]
    assert len(await _stream(redis)) == 1


async def test_ingest_same_id_other_body_is_a_conflict(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    await scripts.ingest(redis, _args("E1"))
    assert await scripts.ingest(redis, _args("E1", body="changed")) == ["conflict", ""]
    assert len(await _stream(redis)) == 1
    assert await redis.hget(_record("E1"), "hash") == _args("E1").payload_hash


async def test_ingest_over_the_limit_is_digested_and_held(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build(rate_limit=RateLimit(2, 60))
    answers = [await scripts.ingest(redis, _args(f"E{i}")) for i in range(4)]
    assert [status for status, _ in answers] == ["queued", "queued", "digested", "digested"]
    assert len(await _stream(redis)) == 2
    held = [orjson.loads(item) for item in await redis.lrange(keys.digest_held(SHARD, CID), 0, -1)]
    assert [(item["src"], item["eid"]) for item in held] == [(SRC, "E2"), (SRC, "E3")]
    assert await redis.hget(_record("E3"), "status") == "digested"
    oldest_ms = rate_log_times(await redis.get(keys.rate_log(SHARD, CID)))[0]
    assert await redis.zscore(keys.digest_due(SHARD), CID) == oldest_ms + 60_000


async def test_ingest_over_the_limit_with_reject_policy_answers_retry_after(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build(rate_limit=RateLimit(1, 60), rate_policy="reject")
    assert (await scripts.ingest(redis, _args("E1")))[0] == "queued"
    status, retry_after_ms = await scripts.ingest(redis, _args("E2"))
    assert status == "rate_limited"
    assert 0 < int(retry_after_ms) <= 60_000
    assert not await redis.exists(_record("E2"))  # nothing kept: core banking sends it again later
    assert await redis.llen(keys.digest_held(SHARD, CID)) == 0
    assert len(await _stream(redis)) == 1


# finish


async def _queued_and_read(redis: Redis, scripts: Scripts, *event_ids: str) -> Entries:
    for event_id in event_ids:
        await scripts.ingest(redis, _args(event_id))
    return await _read(redis)


def _entry_json(fields: dict[str, str], attempts: int) -> bytes:
    return orjson.dumps({**fields, "att": str(attempts)}, option=orjson.OPT_SORT_KEYS)


async def test_finish_delivered_records_and_acks(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    [(entry_id, _)] = await _queued_and_read(redis, scripts, "E1")
    assert await _pending(redis) == 1
    updated = await scripts.finish(
        redis,
        shard=SHARD,
        critical=False,
        entry_id=entry_id,
        records=[_record("E1")],
        status="delivered",
        attempts=1,
        msgid="42",
    )
    assert updated == 1
    record = await redis.hgetall(_record("E1"))
    assert (record["status"], record["attempts"], record["msgid"]) == ("delivered", "1", "42")
    assert int(record["delivered_ms"]) >= int(record["accepted_ms"])
    assert await _pending(redis) == 0


async def test_finish_never_overwrites_a_final_record_but_still_acks(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build()
    [(entry_id, fields)] = await _queued_and_read(redis, scripts, "E1")
    await redis.hset(_record("E1"), mapping={"status": "delivered", "attempts": "1", "msgid": "42"})
    for status in ("failed", "retrying", "dead_lettered", "queued"):
        updated = await scripts.finish(
            redis,
            shard=SHARD,
            critical=False,
            entry_id=entry_id,
            records=[_record("E1")],
            status=status,
            attempts=2,
            last_error="-1",
            retry_due_ms=1,
            entry_json=_entry_json(fields, 2),
        )
        assert updated == 0
    record = await redis.hgetall(_record("E1"))
    assert (record["status"], record["attempts"], record["msgid"]) == ("delivered", "1", "42")
    assert "last_error" not in record
    assert await redis.zcard(keys.retries(SHARD)) == 0  # no retry of a delivered event
    assert await redis.xlen(keys.dead_letters(SHARD)) == 0  # and no dead letter
    assert await _pending(redis) == 0


async def test_finish_retrying_schedules_the_entry(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    [(entry_id, fields)] = await _queued_and_read(redis, scripts, "E1")
    entry = _entry_json(fields, 1)
    updated = await scripts.finish(
        redis,
        shard=SHARD,
        critical=False,
        entry_id=entry_id,
        records=[_record("E1")],
        status="retrying",
        attempts=1,
        last_error="-1",
        retry_due_ms=1_900_000_000_000,
        entry_json=entry,
    )
    assert updated == 1
    assert await scored(redis, keys.retries(SHARD)) == [(entry.decode(), 1_900_000_000_000.0)]
    record = await redis.hgetall(_record("E1"))
    assert (record["status"], record["attempts"], record["last_error"]) == ("retrying", "1", "-1")
    assert await _pending(redis) == 0


async def test_finish_dead_lettered_writes_the_dead_letter(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    [(entry_id, fields)] = await _queued_and_read(redis, scripts, "E1")
    entry = _entry_json(fields, 3)
    await scripts.finish(
        redis,
        shard=SHARD,
        critical=False,
        entry_id=entry_id,
        records=[_record("E1")],
        status="dead_lettered",
        attempts=3,
        last_error="max_attempts: -1",
        entry_json=entry,
    )
    [(_, dead)] = cast(Entries, await redis.xrange(keys.dead_letters(SHARD)))
    assert dead["entry"] == entry.decode()
    assert dead["reason"] == "max_attempts: -1"
    assert int(dead["at"]) > 0
    assert await redis.hget(_record("E1"), "status") == "dead_lettered"
    assert await _pending(redis) == 0


async def test_finish_updates_every_record_of_a_digest(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    [(entry_id, _), _] = await _queued_and_read(redis, scripts, "E1", "E2")
    await redis.hset(_record("E2"), "status", "failed")
    updated = await scripts.finish(
        redis,
        shard=SHARD,
        critical=False,
        entry_id=entry_id,
        records=[_record("E1"), _record("E2")],
        status="delivered",
        attempts=1,
    )
    assert updated == 1
    assert [await redis.hget(_record(e), "status") for e in ("E1", "E2")] == ["delivered", "failed"]


# move_retries


async def test_move_retries_moves_only_due_entries(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    due = {"kind": "event", "eid": "DUE", "cid": CID, "src": SRC, "ev": '{"x":"1/2"}', "acc": "1", "att": "2"}
    later = {**due, "eid": "LATER"}
    seconds, micros = await redis.time()
    now_ms = seconds * 1000 + micros // 1000
    await redis.zadd(
        keys.retries(SHARD),
        {
            _entry_json(due, 2).decode(): now_ms - 1000,
            _entry_json(later, 2).decode(): now_ms + 600_000,
        },
    )
    assert await scripts.move_retries(redis, keys.retries(SHARD), keys.stream(SHARD), 100) == 1
    [(_, fields)] = await _stream(redis)
    assert fields == due
    assert [orjson.loads(e)["eid"] for e in await _members(redis, keys.retries(SHARD))] == ["LATER"]
    assert await scripts.move_retries(redis, keys.retries(SHARD), keys.stream(SHARD), 100) == 0


async def test_move_retries_respects_the_batch_limit(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    await redis.zadd(
        keys.retries(SHARD),
        {_entry_json({"kind": "event", "eid": f"E{i}", "att": "1"}, 1).decode(): i for i in range(5)},
    )
    assert await scripts.move_retries(redis, keys.retries(SHARD), keys.stream(SHARD), 3) == 3
    assert await redis.zcard(keys.retries(SHARD)) == 2
    assert [f["eid"] for _, f in await _stream(redis)] == ["E0", "E1", "E2"]


# flush_digest


async def _age_rate_log(redis: Redis, by_ms: int) -> None:
    """Move the customer's rate window into the past, as if `by_ms` had gone by."""
    log = keys.rate_log(SHARD, CID)
    times = rate_log_times(await redis.get(log))
    await redis.set(log, rate_log_value([at_ms - by_ms for at_ms in times]), px=60_000)


async def test_flush_digest_waits_for_the_window(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build(rate_limit=RateLimit(2, 60))
    for i in range(3):
        await scripts.ingest(redis, _args(f"E{i}"))
    due_before = await redis.zscore(keys.digest_due(SHARD), CID)
    assert await scripts.flush_digest(redis, SHARD, CID, 50) == 0
    assert await redis.zscore(keys.digest_due(SHARD), CID) == due_before
    assert await redis.llen(keys.digest_held(SHARD, CID)) == 1
    assert len(await _stream(redis)) == 2


async def test_flush_digest_queues_held_events_as_one_message(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build(rate_limit=RateLimit(2, 60))
    for i in range(5):
        await scripts.ingest(redis, _args(f"E{i}"))
    await _age_rate_log(redis, 61_000)
    assert await scripts.flush_digest(redis, SHARD, CID, 50) == 3
    stream = await _stream(redis)
    assert len(stream) == 3
    _, digest = stream[-1]
    assert digest["kind"] == "digest"
    assert digest["cid"] == CID
    assert digest["att"] == "0"
    assert digest["did"].startswith("dg-")
    assert len(digest["did"]) == 32
    items = orjson.loads(digest["items"])
    assert [(item["src"], item["eid"]) for item in items] == [(SRC, "E2"), (SRC, "E3"), (SRC, "E4")]
    assert all(orjson.loads(item["ev"])["event_id"] == item["eid"] for item in items)
    assert await redis.llen(keys.digest_held(SHARD, CID)) == 0
    assert await redis.zscore(keys.digest_due(SHARD), CID) is None
    assert rate_log_times(await redis.get(keys.rate_log(SHARD, CID)))[-1] == int(digest["acc"])  # one message


async def test_flush_digest_id_is_stable_for_the_same_first_event(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build(rate_limit=RateLimit(1, 60))
    await scripts.ingest(redis, _args("E0"))
    await scripts.ingest(redis, _args("E1"))
    await _age_rate_log(redis, 61_000)
    await scripts.flush_digest(redis, SHARD, CID, 50)
    first_id = (await _stream(redis))[-1][1]["did"]
    await redis.flushall()
    await scripts.ingest(redis, _args("E0"))
    await scripts.ingest(redis, _args("E1"))
    await _age_rate_log(redis, 61_000)
    await scripts.flush_digest(redis, SHARD, CID, 50)
    assert (await _stream(redis))[-1][1]["did"] == first_id


async def test_flush_digest_takes_at_most_most_and_reschedules_the_rest(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build(rate_limit=RateLimit(1, 60))
    for i in range(4):
        await scripts.ingest(redis, _args(f"E{i}"))
    await _age_rate_log(redis, 61_000)
    assert await scripts.flush_digest(redis, SHARD, CID, 2) == 2
    assert await redis.llen(keys.digest_held(SHARD, CID)) == 1
    # the digest used the window again: the rest waits for it to reopen
    [sent_ms] = rate_log_times(await redis.get(keys.rate_log(SHARD, CID)))
    assert await redis.zscore(keys.digest_due(SHARD), CID) == sent_ms + 60_000
    assert await scripts.flush_digest(redis, SHARD, CID, 2) == 0


async def test_flush_digest_with_nothing_held_unschedules(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    await redis.zadd(keys.digest_due(SHARD), {CID: 1})
    assert await scripts.flush_digest(redis, SHARD, CID, 50) == 0
    assert await redis.zscore(keys.digest_due(SHARD), CID) is None


# token_invalidate, delete_if, replace_hash, save_preferences, mark_binding


async def test_token_invalidate_only_drops_the_failed_token(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    key = keys.token("wx_app")
    await redis.hset(key, mapping={"token": "fresh", "expires_at_ms": 1, "refresh_at_ms": 1})
    assert await scripts.token_invalidate(redis, "wx_app", "stale") is False
    assert await redis.hget(key, "token") == "fresh"
    assert await scripts.token_invalidate(redis, "wx_app", "fresh") is True
    assert not await redis.exists(key)
    assert await scripts.token_invalidate(redis, "wx_app", "fresh") is False


async def test_delete_if_releases_a_lock_only_by_its_holder(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    lock = keys.token_lock("wx_app")
    await redis.set(lock, "holder-1", px=10_000)
    assert await scripts.delete_if(redis, lock, "holder-2") is False
    assert await redis.get(lock) == "holder-1"
    assert await scripts.delete_if(redis, lock, "holder-1") is True
    assert not await redis.exists(lock)
    assert await scripts.delete_if(redis, lock, "holder-1") is False


async def test_replace_hash_leaves_only_the_new_fields(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    key = keys.binding("C-replace")
    await redis.hset(key, mapping={"openid": "oUser_old", "appid": "wx_card", "status": "inactive"})
    await scripts.replace_hash(redis, key, {"openid": "oUser_new", "status": "active"})
    assert await redis.hgetall(key) == {"openid": "oUser_new", "status": "active"}  # no stale appid
    await scripts.replace_hash(redis, key, {"openid": "oUser_new"})
    assert await redis.hgetall(key) == {"openid": "oUser_new"}
    with pytest.raises(ValueError, match="at least one field"):
        await scripts.replace_hash(redis, key, {})


async def test_save_preferences_replaces_them_and_bumps_only_a_held_customer(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build()
    prefs = keys.preferences(SHARD, "C-held")
    await redis.hset(prefs, mapping={"muted": ",debit,", "min:debit": "100"})
    await redis.zadd(keys.digest_due(SHARD), {"C-held": 9_000_000_000_000})
    await scripts.save_preferences(redis, SHARD, "C-held", {"doc": "{}", "muted": ",refund,"}, 1_000)
    assert await redis.hgetall(prefs) == {"doc": "{}", "muted": ",refund,"}  # no stale minimum
    assert await redis.zscore(keys.digest_due(SHARD), "C-held") == 1_000  # held events looked at now
    await scripts.save_preferences(redis, SHARD, "C-free", {"doc": "{}"}, 2_000)
    assert await redis.zscore(keys.digest_due(SHARD), "C-free") is None  # nothing held: nothing scheduled
    with pytest.raises(ValueError, match="at least one field"):
        await scripts.save_preferences(redis, SHARD, "C-held", {}, 3_000)


async def test_mark_binding_only_while_it_names_the_openid_wechat_answered_about(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build()
    key = keys.binding("C-rebound")
    await redis.hset(key, mapping={"openid": "oUser_new", "status": "active"})  # re-bound after the send
    assert await scripts.mark_binding(redis, "C-rebound", "oUser_old", "unsubscribed") is False
    assert await redis.hget(key, "status") == "active"
    assert await scripts.mark_binding(redis, "C-rebound", "oUser_new", "unsubscribed") is True
    assert await redis.hget(key, "status") == "unsubscribed"
    assert await scripts.mark_binding(redis, "C-gone", "oUser_new", "unsubscribed") is False
    assert not await redis.exists(keys.binding("C-gone"))


# replay_dead


async def test_replay_dead_puts_the_entry_back_with_attempts_reset(
    redis: Redis, build: Callable[..., Any]
) -> None:
    _, scripts = build()
    [(entry_id, fields)] = await _queued_and_read(redis, scripts, "E1")
    await scripts.finish(
        redis,
        shard=SHARD,
        critical=False,
        entry_id=entry_id,
        records=[_record("E1")],
        status="dead_lettered",
        attempts=3,
        last_error="max_attempts: -1",
        entry_json=_entry_json({**fields, "unc": "1"}, 3),  # its last send had no clear answer
    )
    [(dead_id, _)] = cast(Entries, await redis.xrange(keys.dead_letters(SHARD)))
    new_id = await scripts.replay_dead(
        redis, keys.dead_letters(SHARD), keys.stream(SHARD), dead_id, [_record("E1")]
    )
    assert new_id is not None
    [_, (replayed_id, replayed)] = await _stream(redis)
    assert replayed_id == new_id
    replayed_ms = int(replayed.pop("rep"))  # its age counts from the replay (Redis TIME)
    assert abs(replayed_ms - int(time.time() * 1000)) < 60_000
    assert replayed == {**fields, "att": "0"}  # no "unc": the operator chose to send again
    record = await redis.hgetall(_record("E1"))
    assert (record["status"], record["attempts"]) == ("queued", "0")
    assert await redis.xlen(keys.dead_letters(SHARD)) == 0
    assert (
        await scripts.replay_dead(
            redis, keys.dead_letters(SHARD), keys.stream(SHARD), dead_id, [_record("E1")]
        )
        is None
    )
    assert len(await _stream(redis)) == 2


async def test_replay_dead_of_an_unknown_id_changes_nothing(redis: Redis, build: Callable[..., Any]) -> None:
    _, scripts = build()
    await scripts.ingest(redis, _args("E1"))
    assert (
        await scripts.replay_dead(redis, keys.dead_letters(SHARD), keys.stream(SHARD), "1-1", [_record("E1")])
        is None
    )
    assert await redis.hget(_record("E1"), "status") == "queued"
    assert len(await _stream(redis)) == 1


async def test_finish_many_records_each_entry_as_its_own_call_would(
    redis: Redis, build: Callable[..., Any]
) -> None:
    """A worker sends the outcomes of many deliveries in one finish call: each entry gets what a call of
    its own would give it (its count, its retry or dead letter, its ack), and a repeat changes nothing."""
    _, scripts = build()
    read = await _queued_and_read(redis, scripts, "E1", "E2", "E3")
    statuses = ["delivered", "retrying", "dead_lettered"]
    outcomes = [
        EntryOutcome(
            SHARD,
            False,
            entry_id,
            [_record(f"E{i + 1}")],
            status,
            1,
            last_error="" if status == "delivered" else "-1",
            msgid="42" if status == "delivered" else "",
            retry_due_ms=1_900_000_000_000,
            entry_json=_entry_json(fields, 1),
        )
        for i, ((entry_id, fields), status) in enumerate(zip(read, statuses, strict=True))
    ]
    assert await scripts.finish_many(redis, outcomes) == [1, 1, 1]
    assert [await redis.hget(_record(f"E{i}"), "status") for i in (1, 2, 3)] == statuses
    assert await redis.hget(_record("E1"), "msgid") == "42"
    assert await redis.zcard(keys.retries(SHARD)) == 1
    assert await redis.xlen(keys.dead_letters(SHARD)) == 1
    assert await _pending(redis) == 0
    assert await scripts.finish_many(redis, outcomes) == [0, 1, 0]  # final records keep their state
    assert await redis.xlen(keys.dead_letters(SHARD)) == 1
