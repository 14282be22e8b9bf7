"""The pipeline end to end on a real Redis Cluster (`redis+cluster://`, three primaries with a replica each):
single and batch ingest over shards on every primary, delivery exactly once, a digest, a retry, a dead letter
replayed by `pushgw dlq replay`, and a critical event read before a normal backlog."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.cluster.conftest import SHARDS, node_of
from tests.conftest import Stack
from tests.support import KEY_ID, eventually, make_event, sent_as

pytestmark = pytest.mark.e2e
StackFactory = Callable[..., Awaitable[Stack]]
FINAL = {"delivered", "failed", "dead_lettered", "no_binding"}


def customer_per_shard(prefix: str) -> list[str]:
    """One customer id in each shard (shard i at index i)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < SHARDS:
        customer = f"C-{prefix}-{index:03d}"
        found.setdefault(keys.shard_of(customer, SHARDS), customer)
        index += 1
    return [found[shard] for shard in range(SHARDS)]


def openid(customer: str) -> str:
    return f"o{customer.replace('-', '_')}"


async def statuses(stack: Stack, event_ids: list[str]) -> list[str | None]:
    return list(await asyncio.gather(*(stack.status_of(event_id) for event_id in event_ids)))


async def until_final(stack: Stack, event_ids: list[str], wanted: set[str] = FINAL) -> None:
    async def done() -> bool:
        return all(status in wanted for status in await statuses(stack, event_ids))

    await eventually(done)


async def messages_of(stack: Stack, customers: list[str]) -> dict[str, list[str]]:
    """customer -> the client_msg_ids WeChat showed that customer, in order."""
    return {c: [m["client_msg_id"] for m in await stack.delivered_to(openid(c))] for c in customers}


async def test_the_shards_cover_every_primary(redis: RedisCluster) -> None:
    nodes = {node_of(redis, keys.stream(shard)).name for shard in range(SHARDS)}
    assert len(nodes) == len(redis.get_primaries()) == 3


async def test_every_node_connection_encodes_in_c(redis: RedisCluster) -> None:
    """The cluster's node connections are the C-packed class (the single-Redis client's), the discovered
    nodes' as well as the seeds'."""
    await redis.ping(target_nodes=RedisCluster.PRIMARIES)
    nodes = redis.get_nodes()
    assert len(redis.get_primaries()) == 3  # (replicas come and go with the failover tests)
    for node in nodes:
        assert node.connection_class.__name__.startswith("CPacked"), node.name
        connection = node.acquire_connection()
        try:
            assert connection.pack_command("EVALSHA", "x", 1, "k") == [
                b"*4\r\n$7\r\nEVALSHA\r\n$1\r\nx\r\n$1\r\n1\r\n$1\r\nk\r\n"
            ]
        finally:
            node.release(connection)


async def test_ingest_and_delivery_exactly_once_with_a_digest_and_a_retry(
    stack_for: StackFactory, redis: RedisCluster
) -> None:
    stack = await stack_for(workers=2, rate_limit=RateLimit(2, 1))
    customers = customer_per_shard("flow")
    hot = customers[0]
    for customer in customers:
        await stack.client.bind(customer, openid(customer))
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}]})  # the first send is retried

    singles = [make_event(customer_id=customer) for customer in customers]
    answers = await asyncio.gather(*(stack.client.post_event(event) for event in singles))
    assert {(status, body["status"]) for status, body in answers} == {(202, "queued")}
    batch = [make_event(customer_id=customer, amount="2.00") for customer in customers]
    extra = [make_event(customer_id=hot, amount=f"{i}.00") for i in (3, 4)]  # over the hot one's limit
    status, body = await stack.client.call("POST", "/v1/events/batch", {"events": batch + extra})
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["queued"] * SHARDS + ["digested"] * 2

    everything = [e["event_id"] for e in singles + batch + extra]
    await until_final(stack, everything, {"delivered"})
    shown = await messages_of(stack, customers)
    for customer, ids in shown.items():
        assert len(ids) == len(set(ids)), f"{customer} got a message twice"
    singles_and_batch = {sent_as(e) for e in singles + batch}
    assert {i for ids in shown.values() for i in ids} >= singles_and_batch
    assert len(shown[hot]) == 3  # two events and one digest of the two over the limit
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["errcodes"].get("-1") == 1
    assert stats["delivered"] == 2 * SHARDS + 1
    records = [keys.event(keys.shard_of(e["customer_id"], SHARDS), KEY_ID, e["event_id"]) for e in singles]
    assert {int(await redis.hget(record, "attempts") or 0) for record in records} <= {1, 2}


async def test_a_dead_letter_is_replayed_by_the_cli(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=1)
    customer = customer_per_shard("dead")[SHARDS - 1]
    await stack.client.bind(customer, openid(customer))
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 47003}]})
    event = make_event(customer_id=customer)
    assert (await stack.client.post_event(event))[0] == 202
    await until_final(stack, [event["event_id"]], {"dead_lettered"})

    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSHGW_")}
    env.update(PUSHGW_REDIS_URL=stack.settings.redis_url, PUSHGW_SHARDS=str(SHARDS))
    command = [
        str(Path(sys.executable).with_name("pushgw")),
        "dlq",
        "replay",
        "--event-id",
        event["event_id"],
    ]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    await until_final(stack, [event["event_id"]], {"delivered"})
    assert await messages_of(stack, [customer]) == {customer: [sent_as(event)]}


async def test_a_critical_event_is_read_before_a_normal_backlog(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(1000, 60))
    customers = customer_per_shard("crit")
    for customer in customers:
        await stack.client.bind(customer, openid(customer))
    backlog = [make_event(customer_id=customers[i % SHARDS], type="debit", amount="1.00") for i in range(40)]
    status, _ = await stack.client.call("POST", "/v1/events/batch", {"events": backlog})
    assert status == 200
    critical = make_event(customer_id=customers[3], type="debit", amount="90000.00", priority="critical")
    assert (await stack.client.post_event(critical))[1]["status"] == "queued"

    stack.start_worker("w-one", worker_concurrency=1, read_batch=1)
    ids = [e["event_id"] for e in backlog]
    await until_final(stack, [*ids, critical["event_id"]], {"delivered"})
    order: list[tuple[int, str]] = []
    for event in [*backlog, critical]:
        shard = keys.shard_of(event["customer_id"], SHARDS)
        delivered_ms = await stack_redis(stack).hget(
            keys.event(shard, KEY_ID, event["event_id"]), "delivered_ms"
        )
        order.append((int(delivered_ms or 0), event["event_id"]))
    assert min(order)[1] == critical["event_id"]


def stack_redis(stack: Stack) -> Any:
    """The stack's client (a RedisCluster here, whatever the Stack annotation of the root conftest says)."""
    return stack.redis
