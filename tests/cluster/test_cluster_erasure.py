"""DELETE /v1/customers/{id} on a real Redis Cluster: the binding, the msgid index and the customer's shard
sit in different slots (on different primaries here), and each step of the erasure touches one slot."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.cluster.conftest import SHARDS, node_of
from tests.conftest import Stack
from tests.support import eventually, make_event

pytestmark = pytest.mark.e2e
StackFactory = Callable[..., Awaitable[Stack]]
ACCOUNT, COUNTERPARTY = "6222020299881111", "Cluster Erasure Cafe"


def _customer_off_its_binding_node(redis: RedisCluster) -> str:
    """A customer whose shard lives on another primary than their binding."""
    for index in range(1000):
        customer = f"C-erase-cl-{index:03d}"
        shard = keys.shard_of(customer, SHARDS)
        if node_of(redis, keys.binding(customer)).name != node_of(redis, keys.stream(shard)).name:
            return customer
    raise AssertionError("no such customer")


async def _held_anywhere(redis: RedisCluster, values: tuple[str, ...]) -> list[str]:
    """Keys on any primary whose name or content holds one of `values`."""
    found = []
    for node in redis.get_primaries():
        async for key in redis.scan_iter(match="*", count=1000, target_nodes=node):
            kind = await redis.type(key)
            if kind == "hash":
                content = str(await redis.hgetall(key))
            elif kind == "string":
                content = str(await redis.get(key))
            elif kind == "list":
                content = str(await redis.lrange(key, 0, -1))
            elif kind == "zset":
                content = str(await redis.zrange(key, 0, -1))
            elif kind == "stream":
                content = str(await redis.xrange(key))
            else:
                content = ""
            if any(value in f"{key} {content}" for value in values):
                found.append(str(key))
    return found


async def test_erasure_on_a_cluster(stack_for: StackFactory, redis: RedisCluster) -> None:
    stack = await stack_for(workers=1, rate_limit=RateLimit(1, 60))
    customer = _customer_off_its_binding_node(redis)
    openid = f"o{customer.replace('-', '_')}"
    await stack.client.bind(customer, openid)
    sent, held = (
        make_event(customer_id=customer, account=ACCOUNT, counterparty=COUNTERPARTY, amount=amount)
        for amount in ("1.00", "2.00")
    )
    await stack.client.post_event(sent)

    async def delivered() -> bool:
        return await stack.status_of(sent["event_id"]) == "delivered"

    await eventually(delivered)
    assert (await stack.client.post_event(held))[1]["status"] == "digested"

    personal = (customer, openid, ACCOUNT, COUNTERPARTY)
    assert len(await _held_anywhere(redis, personal)) >= 5  # binding, msgid index, record, timeline, ...

    status, body = await stack.client.call("DELETE", f"/v1/customers/{customer}")
    assert status == 200, body
    erased = body["erased"]
    assert (erased["binding"], erased["event_records"], erased["timeline_entries"]) == (1, 2, 2)
    assert erased["held_events"] == 1
    assert await _held_anywhere(redis, personal) == []
    assert await stack.status_of(held["event_id"]) == "no_binding"
    assert (await stack.client.post_event(sent))[1]["status"] == "duplicate"
    again = (await stack.client.call("DELETE", f"/v1/customers/{customer}"))[1]["erased"]
    assert set(again.values()) == {0}
