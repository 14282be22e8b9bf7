"""notice_finish.lua against a real Redis: each outcome written with the XACK, once, and never a record
recreated."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
import pytest
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from tests.workers.flows import Entries, scored

SHARD = 0
RECORD = keys.event(SHARD, "cbs", "E-notice")


@pytest.fixture
def scripts(settings_for: Callable[..., Settings]) -> Scripts:
    return Scripts(settings_for())


async def _pending_notice(redis: Redis, with_record: bool = True) -> tuple[str, dict[str, str]]:
    """A notice entry read by a consumer (so it is pending), and its event record."""
    await ensure_groups(redis, 1)
    if with_record:
        await redis.hset(RECORD, mapping={"status": "no_binding", "notice": "queued", "src": "cbs"})
        await redis.expire(RECORD, 3600)
    fields: dict[Any, Any] = {"src": "cbs", "eid": "E-notice", "cid": "C1", "type": "event.no_binding"}
    await redis.xadd(keys.notices(SHARD), {**fields, "status": "no_binding", "reason": "", "at": 1, "att": 0})
    batch: Any = await redis.xreadgroup(keys.NOTICE_GROUP, "c1", {keys.notices(SHARD): ">"}, count=1)
    entry_id, read = cast(Entries, batch[0][1])[0]
    return entry_id, read


async def _pending(redis: Redis) -> int:
    summary: Any = await redis.xpending(keys.notices(SHARD), keys.NOTICE_GROUP)
    return int(summary["pending"])


async def _dead(redis: Redis) -> Entries:
    return cast(Entries, await redis.xrange(keys.notice_dead_letters(SHARD)))


async def test_sent_acks_and_marks_the_record(redis: Redis, scripts: Scripts) -> None:
    entry_id, _ = await _pending_notice(redis)

    assert await scripts.notice_finish(
        redis, shard=SHARD, entry_id=entry_id, record=RECORD, outcome="sent", attempts=1
    )

    record = await redis.hgetall(RECORD)
    assert record["notice"] == "sent" and record["notice_attempts"] == "1"
    assert int(record["notified_ms"]) > 0 and "notice_error" not in record
    assert record["status"] == "no_binding"  # the event's own status is not the notifier's
    assert await _pending(redis) == 0
    assert await redis.ttl(RECORD) > 0


async def test_retry_schedules_the_entry_and_acks(redis: Redis, scripts: Scripts) -> None:
    entry_id, fields = await _pending_notice(redis)
    entry = orjson.dumps({**fields, "att": "1"}, option=orjson.OPT_SORT_KEYS)

    await scripts.notice_finish(
        redis,
        shard=SHARD,
        entry_id=entry_id,
        record=RECORD,
        outcome="retry",
        attempts=1,
        reason="http_503",
        retry_due_ms=12345,
        entry_json=entry,
    )

    assert await scored(redis, keys.notice_retries(SHARD)) == [(entry.decode(), 12345.0)]
    record = await redis.hgetall(RECORD)
    assert (record["notice"], record["notice_error"]) == ("retrying", "http_503")
    assert await _pending(redis) == 0 and await _dead(redis) == []


@pytest.mark.parametrize(
    ("outcome", "reason"), [("failed", "http_404"), ("dead_lettered", "max_attempts: timeout")]
)
async def test_failed_and_dead_lettered_write_a_dead_letter(
    redis: Redis, scripts: Scripts, outcome: str, reason: str
) -> None:
    entry_id, fields = await _pending_notice(redis)
    entry = orjson.dumps({**fields, "att": "3"}, option=orjson.OPT_SORT_KEYS)

    await scripts.notice_finish(
        redis,
        shard=SHARD,
        entry_id=entry_id,
        record=RECORD,
        outcome=outcome,
        attempts=3,
        reason=reason,
        entry_json=entry,
    )

    [(_, dead)] = await _dead(redis)
    assert orjson.loads(dead["entry"])["att"] == "3" and dead["reason"] == reason and int(dead["at"]) > 0
    record = await redis.hgetall(RECORD)
    assert (record["notice"], record["notice_error"], record["notice_attempts"]) == (outcome, reason, "3")
    assert await _pending(redis) == 0 and await redis.zcard(keys.notice_retries(SHARD)) == 0


async def test_a_second_finish_of_the_same_entry_changes_nothing(redis: Redis, scripts: Scripts) -> None:
    entry_id, fields = await _pending_notice(redis)
    entry = orjson.dumps(fields)
    common: dict[str, Any] = {"shard": SHARD, "entry_id": entry_id, "record": RECORD, "entry_json": entry}

    assert await scripts.notice_finish(redis, outcome="failed", attempts=1, reason="http_400", **common)
    assert not await scripts.notice_finish(redis, outcome="failed", attempts=1, reason="http_400", **common)
    assert not await scripts.notice_finish(redis, outcome="sent", attempts=2, **common)

    assert len(await _dead(redis)) == 1
    assert await redis.hget(RECORD, "notice") == "failed"


async def test_an_expired_record_is_not_recreated(redis: Redis, scripts: Scripts) -> None:
    entry_id, _ = await _pending_notice(redis, with_record=False)

    assert await scripts.notice_finish(
        redis, shard=SHARD, entry_id=entry_id, record=RECORD, outcome="sent", attempts=1
    )

    assert not await redis.exists(RECORD)
    assert await _pending(redis) == 0


async def test_move_retries_puts_a_due_notice_back_on_the_notice_stream(
    redis: Redis, scripts: Scripts
) -> None:
    await ensure_groups(redis, 1)
    due = orjson.dumps({"src": "cbs", "eid": "E1", "type": "event.failed", "att": "2"})
    later = orjson.dumps({"src": "cbs", "eid": "E2", "type": "event.failed", "att": "1"})
    await redis.zadd(keys.notice_retries(SHARD), {due.decode(): 1, later.decode(): 2**50})

    moved = await scripts.move_retries(redis, keys.notice_retries(SHARD), keys.notices(SHARD), 100)

    assert moved == 1
    [(_, fields)] = cast(Entries, await redis.xrange(keys.notices(SHARD)))
    assert fields == {"src": "cbs", "eid": "E1", "type": "event.failed", "att": "2"}
    assert await redis.zcard(keys.notice_retries(SHARD)) == 1
