"""The worker's log lines the runbook quotes say what they claim: the one shutdown line counts what it
handled by what it came to (it once called every handled entry `delivered`), and an entry left pending for
reclaim names its event."""

from __future__ import annotations

import asyncio
import io
import logging

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.core import keys, metrics
from gateway.core.logs import JsonFormatter
from gateway.core.redis import ensure_groups
from tests.support import eventually, make_event
from tests.workers.flows import StackFactory, until_status
from workers.consumer import Consumer, Limits, Streams

pytestmark = pytest.mark.e2e


async def test_the_summary_counts_outcomes_by_what_they_were(
    stack_for: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await stack_for(workers=0)
    await stack.client.bind("C-sum", "oUser_summary")
    delivered = [make_event(customer_id="C-sum") for _ in range(2)]
    unbound = [make_event(customer_id="C-nobody") for _ in range(2)]
    for event in delivered + unbound:
        assert (await stack.client.post_event(event))[0] == 202
    stack.start_worker(name="summed")
    for event in delivered:
        await until_status(stack, event["event_id"], "delivered")
    for event in unbound:
        await until_status(stack, event["event_id"], "no_binding")
    with caplog.at_level(logging.INFO, logger="workers.worker"):
        await stack.stop_workers()
    [line] = [record for record in caplog.records if record.getMessage() == "worker stopped"]
    assert line.__dict__["delivered"] == 2
    assert line.__dict__["deliveries"] == {"delivered": 2, "no_binding": 2}
    assert line.__dict__["cut_off"] == 0


async def test_an_entry_left_pending_for_reclaim_names_its_event(redis: Redis) -> None:
    """Runbook, PushgwPendingStuck: `delivery entry left pending for reclaim`, with the event_id."""
    await ensure_groups(redis, 1)
    stream = keys.stream(0)
    await redis.xadd(stream, {"kind": "event", "eid": "E-pending-1", "cid": "C1"})

    async def failing(shard: int, entry_id: str, fields: dict[str, str]) -> None:
        raise RedisConnectionError("redis went away")

    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(JsonFormatter())  # formats as it is emitted, inside the consumer's bound context
    logger = logging.getLogger("workers.consumer")
    logger.addHandler(handler)
    consumer = Consumer(
        redis, "c1", Streams(keys.GROUP, ({stream: 0},)), failing, Limits(4, 4, 30, 1.0), metrics.INFLIGHT
    )
    stopping = asyncio.Event()
    reader = asyncio.create_task(consumer.read_loop(stopping))
    try:

        async def logged() -> bool:
            return "left pending" in written.getvalue()

        await eventually(logged, timeout_s=10)
    finally:
        stopping.set()
        await reader
        await consumer.drain(1.0)
        logger.removeHandler(handler)
    [line] = [orjson.loads(text) for text in written.getvalue().splitlines() if "left pending" in text]
    assert line["msg"] == "delivery entry left pending for reclaim: ConnectionError"
    assert line["event_id"] == "E-pending-1"
