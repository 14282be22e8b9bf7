"""A critical alert overtakes a backlog of 10,000 normal events: it is read from its own stream first."""

from __future__ import annotations

from gateway.core import keys
from gateway.core.redis import ensure_groups
from gateway.core.settings import RateLimit
from tests.support import APP_SECRET, APPID, KEY_ID, eventually, make_event
from tests.workers.flows import StackFactory, backlog, until_status
from wechatsim.app import SimConfig
from wechatsim.faults import FaultConfig

BACKLOG, BATCH = 10_000, 500
CUSTOMER, OPENID = "C-bulk", "oUser_bulk01"


async def test_a_critical_event_overtakes_ten_thousand_queued_events(stack_for: StackFactory) -> None:
    # every send takes 20 ms and a worker sends 16 at once: the backlog takes about 12 s to drain
    sim = SimConfig(apps={APPID: APP_SECRET}, faults=FaultConfig(latency_ms=20))
    stack = await stack_for(
        workers=0, sim_config=sim, worker_concurrency=16, read_batch=16, rate_limit=RateLimit(100_000, 60)
    )
    await stack.client.bind(CUSTOMER, OPENID)
    for _ in range(BACKLOG // BATCH):
        events = [make_event(customer_id=CUSTOMER, type="debit", amount="1.00") for _ in range(BATCH)]
        status, body = await stack.client.call("POST", "/v1/events/batch", {"events": events})
        assert status == 200 and {r["status"] for r in body["results"]} == {"queued"}
    await ensure_groups(stack.redis, 1)
    stack.start_worker("w0")

    async def draining() -> bool:
        return await backlog(stack.redis) <= BACKLOG - 200

    await eventually(draining)
    critical = make_event(customer_id=CUSTOMER, type="debit", amount="88000.00", priority="critical")
    assert (await stack.client.post_event(critical))[1]["status"] == "queued"
    await until_status(stack, critical["event_id"], "delivered")
    behind = await backlog(stack.redis)
    record = await stack.redis.hgetall(keys.event(0, KEY_ID, critical["event_id"]))
    latency_ms = int(record["delivered_ms"]) - int(record["accepted_ms"])
    print(f"critical behind a backlog: delivered in {latency_ms} ms with {behind} normal events still queued")
    assert behind > BACKLOG // 2  # it did not wait its turn behind the backlog
