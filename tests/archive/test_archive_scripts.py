"""lib/archive.lua inside the finish scripts, against a real Redis: a final state is handed to the archive
stream in the same step (a snapshot without the payload and recipient hashes, its version one higher), a
state that is not final or not new is not, and nothing is without an archive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.redis import ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.core.status import EventStatus

RECORD = keys.event(0, "cbs", "CBS-SCRIPT-1")
ARCHIVE = "postgresql://pushgw:secret@127.0.0.1:1/archive"


async def _entries(redis: Redis) -> list[dict[str, str]]:
    found = cast(list[tuple[str, dict[str, str]]], await redis.xrange(keys.archive(0)))
    return [fields for _, fields in found]


async def _record(redis: Redis) -> None:
    fields: dict[Any, Any] = {"hash": "h" * 64, "status": "queued", "src": "cbs", "eid": "CBS-SCRIPT-1"}
    fields |= {"accepted_ms": "1", "customer_id": "C-script", "amount": "9.99", "account_tail": "1234"}
    await redis.hset(RECORD, mapping=fields)
    await redis.expire(RECORD, 3600)


async def _finish(scripts: Scripts, redis: Redis, status: EventStatus, **more: Any) -> int:
    return int(
        await scripts.finish(
            redis,
            shard=0,
            critical=False,
            entry_id="1-1",
            records=[RECORD],
            status=status,
            attempts=1,
            **more,
        )
    )


async def test_finish_hands_a_final_state_over_once(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    await ensure_groups(redis, 1)
    await _record(redis)
    scripts = Scripts(settings_for(archive_url=ARCHIVE))
    await _finish(scripts, redis, EventStatus.RETRYING, retry_due_ms=2, entry_json=b"{}")
    assert await _entries(redis) == []  # not final
    assert await _finish(scripts, redis, EventStatus.DELIVERED, msgid="m-1", to_hash="t" * 16) == 1
    [entry] = await _entries(redis)
    assert (entry["status"], entry["arch_v"], entry["msgid"], entry["customer_id"]) == (
        "delivered",
        "1",
        "m-1",
        "C-script",
    )
    assert "hash" not in entry and "to_hash" not in entry, (
        "a hash of the payload or the recipient was archived"
    )
    assert await _finish(scripts, redis, EventStatus.FAILED) == 0  # already final: kept, not handed again
    assert len(await _entries(redis)) == 1

    await scripts.notice_finish(redis, shard=0, entry_id="1-2", record=RECORD, outcome="retry", attempts=1)
    assert len(await _entries(redis)) == 1  # a notice retry is no final outcome
    await redis.xadd(keys.notices(0), {"src": "cbs"}, id="1-3")
    await redis.xreadgroup(keys.NOTICE_GROUP, "c", {keys.notices(0): ">"})
    assert await scripts.notice_finish(
        redis, shard=0, entry_id="1-3", record=RECORD, outcome="sent", attempts=2
    )
    latest = (await _entries(redis))[-1]
    assert (latest["notice"], latest["arch_v"]) == ("sent", "2")
    assert await redis.hget(RECORD, "arch_v") == "2"


async def test_nothing_is_handed_over_without_an_archive(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    await ensure_groups(redis, 1)
    await _record(redis)
    assert await _finish(Scripts(settings_for()), redis, EventStatus.DELIVERED, msgid="m-1", to_hash="t") == 1
    assert await _entries(redis) == []
    assert await redis.hget(RECORD, "arch_v") is None
