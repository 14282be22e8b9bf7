"""Critical entries keep to their own stream through retries, dead letters and replays; the ingest script
routes by preference and priority, and the finish script queues the fallback notice a source asked for."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import orjson
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.event import payload_hash
from gateway.core.redis import ensure_groups
from gateway.core.scripts import IngestArgs, Scripts
from gateway.core.settings import Settings
from workers.deadletter import list_dead, replay
from workers.queue_monitor import QueueMonitor

SRC, CID = "cbs", "C-crit"
Entries = list[tuple[str, dict[str, str]]]


def _args(event_id: str, *, critical: bool, event_type: str = "debit", cents: str = "100") -> IngestArgs:
    canonical = orjson.dumps({"event_id": event_id, "type": event_type, "cents": cents})
    summary = (("fallback", "sms"), ("priority", "critical" if critical else "normal"))
    return IngestArgs(
        SRC, event_id, CID, canonical, payload_hash(canonical), event_type, cents, critical, summary
    )


async def _read(redis: Redis, stream: str) -> Entries:
    batch: Any = await redis.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=10)
    return cast(Entries, batch[0][1]) if batch else []


async def test_critical_retries_and_replays_stay_on_the_critical_stream(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    settings = settings_for()
    scripts = Scripts(settings)
    await ensure_groups(redis, 1)
    assert await scripts.ingest(redis, _args("E1", critical=True)) == ["queued", await _last_id(redis)]
    critical = keys.stream(0, critical=True)
    [(entry_id, fields)] = await _read(redis, critical)
    assert fields["pri"] == "critical"
    record = keys.event(0, SRC, "E1")
    entry_json = orjson.dumps({**fields, "att": "1"}, option=orjson.OPT_SORT_KEYS)
    common: dict[str, Any] = {
        "shard": 0,
        "critical": True,
        "records": [record],
        "attempts": 1,
        "entry_json": entry_json,
    }
    await scripts.finish(
        redis, entry_id=entry_id, status="retrying", last_error="-1", retry_due_ms=1, **common
    )
    assert await redis.zcard(keys.retries(0, critical=True)) == 1 and await redis.zcard(keys.retries(0)) == 0
    assert await scripts.move_retries(redis, keys.retries(0, True), critical, 10) == 1
    [(again_id, _)] = await _read(redis, critical)
    await scripts.finish(
        redis, entry_id=again_id, status="dead_lettered", last_error="max_attempts", **common
    )
    [letter] = await list_dead(redis, settings)
    assert letter.critical
    assert await replay(redis, scripts, [letter]) == 1
    assert len(await _read(redis, critical)) == 1
    assert await redis.xlen(keys.stream(0)) == 0  # nothing ever went to the normal stream


async def _last_id(redis: Redis) -> str:
    [(entry_id, _)] = cast(Entries, await redis.xrevrange(keys.stream(0, critical=True), count=1))
    return entry_id


async def test_a_final_state_queues_the_notice_only_for_sources_with_a_callback(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    await ensure_groups(redis, 1)
    for callbacks, expected in (({}, 0), ({SRC: "http://127.0.0.1:9/cb"}, 1)):
        await redis.delete(keys.notices(0))
        scripts = Scripts(settings_for(callback_urls=callbacks))
        event_id = f"E-{expected}"
        await scripts.ingest(redis, _args(event_id, critical=False))
        [(entry_id, _)] = await _read(redis, keys.stream(0))
        record = keys.event(0, SRC, event_id)
        await scripts.finish(
            redis,
            shard=0,
            critical=False,
            entry_id=entry_id,
            records=[record],
            status="delivered",
            attempts=1,
        )
        notices = cast(Entries, await redis.xrange(keys.notices(0)))
        assert len(notices) == expected
        if expected:  # "fallback": "sms" asks to hear about every final state, delivered included
            assert notices[0][1] | {"at": "-"} == {
                "src": SRC,
                "eid": event_id,
                "cid": CID,
                "type": "event.delivered",
                "status": "delivered",
                "reason": "",
                "at": "-",
                "att": "0",
            }
            assert await redis.hget(record, "notice") == "queued"


async def test_the_queue_monitor_reports_critical_events_waiting(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    scripts = Scripts(settings_for())
    await ensure_groups(redis, 1)
    monitor = QueueMonitor(redis, 1)
    await scripts.ingest(redis, _args("E-wait", critical=True))
    assert (await monitor.sample()).shards[0].critical_waiting == 1  # not read yet
    [(entry_id, _)] = await _read(redis, keys.stream(0, critical=True))
    assert (await monitor.sample()).shards[0].critical_waiting == 1  # read, not finished
    record = keys.event(0, SRC, "E-wait")
    await scripts.finish(
        redis, shard=0, critical=True, entry_id=entry_id, records=[record], status="delivered", attempts=1
    )
    assert (await monitor.sample()).shards[0].critical_waiting == 0
