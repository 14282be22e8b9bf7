"""DELETE /v1/customers/{customer_id}: everything personal about the customer leaves Redis, what dedup needs
stays, an event in flight ends no_binding with nothing sent, and a repeat answers zeros."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import REGISTRY
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.core import keys
from gateway.core.scripts import Scripts
from gateway.core.settings import RateLimit, Settings
from gateway.erasure import customer_ref
from tests.conftest import Stack
from tests.support import KEY_ID, SECRET, eventually, make_event, sent_as
from tests.webhook_receiver import WebhookReceiver
from tests.workers.flows import StackFactory, backlog, pending, until_status

CUSTOMER, OPENID = "C-erase-01", "oUser_erase01"
ACCOUNT, COUNTERPARTY = "6222020299887766", "Erasure Test Bistro"
PERSONAL = (CUSTOMER, OPENID, ACCOUNT, COUNTERPARTY)
ZEROS = {
    "binding": 0,
    "preferences": 0,
    "timeline_entries": 0,
    "held_events": 0,
    "event_records": 0,
    "queued_copies": 0,
}


def _event(**overrides: Any) -> dict[str, Any]:
    return make_event(customer_id=CUSTOMER, account=ACCOUNT, counterparty=COUNTERPARTY, **overrides)


async def _dump(redis: Redis) -> list[str]:
    """Every key of Redis with everything it holds, as text (streams and sets included)."""
    found = []
    async for key in redis.scan_iter(match="*", count=1000):
        kind = await redis.type(key)
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = await redis.hgetall(key)
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "set":
            value = await redis.smembers(key)
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "stream":
            value = await redis.xrange(key)
        else:
            value = kind
        found.append(f"{key} {value}")
    return found


async def _personal_left(redis: Redis) -> list[str]:
    """The keys whose name or content still holds the customer id, openid, account or counterparty."""
    return [text[:200] for text in await _dump(redis) if any(value in text for value in PERSONAL)]


async def _erase(stack: Stack, customer_id: str = CUSTOMER) -> dict[str, int]:
    status, body = await stack.client.call("DELETE", f"/v1/customers/{customer_id}")
    assert status == 200, body
    assert body["customer_id"] == customer_id
    erased: dict[str, int] = body["erased"]
    return erased


def _erasures(result: str) -> float:
    return REGISTRY.get_sample_value("pushgw_erasures_total", {"result": result}) or 0.0


async def test_erasure_removes_everything_personal_and_keeps_dedup(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(1, 60))
    await stack.client.bind(CUSTOMER, OPENID)
    prefs = {"muted_types": ["refund"], "min_amount": {"debit": "5.00"}}
    assert (await stack.client.call("PUT", f"/v1/customers/{CUSTOMER}/preferences", prefs))[0] == 200
    queued, held, also_held = _event(), _event(amount="2.00"), _event(amount="3.00")
    answers = [await stack.client.post_event(event) for event in (queued, held, also_held)]
    assert [body["status"] for _, body in answers] == ["queued", "digested", "digested"]
    assert await _personal_left(stack.redis), "the test plants what the erasure must find"
    erased_before = _erasures("erased")

    assert await _erase(stack) == {
        "binding": 1,
        "preferences": 1,
        "timeline_entries": 3,
        "held_events": 2,
        "event_records": 3,
        "queued_copies": 1,  # the queued event's stream entry, not yet read
    }
    assert await _personal_left(stack.redis) == []
    assert _erasures("erased") == erased_before + 1
    for event in (queued, held, also_held):  # in flight: ended no_binding, the lifecycle still answers
        status, view = await stack.client.call("GET", f"/v1/events/{event['event_id']}")
        assert (status, view["status"], view["last_error"]) == (200, "no_binding", "erased")
    assert (await stack.client.call("GET", f"/v1/bindings/{CUSTOMER}"))[0] == 404
    _, shown = await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/preferences")
    assert shown["muted_types"] == [] and shown["min_amount"] == {}
    assert (await stack.client.call("GET", f"/v1/customers/{CUSTOMER}/events"))[1]["events"] == []

    # the ids and payload hashes stay: a re-send is still a duplicate, a changed body still a conflict
    assert await stack.client.post_event(queued) == (
        200,
        {"event_id": queued["event_id"], "status": "duplicate"},
    )
    assert (await stack.client.post_event({**held, "amount": "9.99"}))[0] == 422
    assert await _personal_left(stack.redis) == []

    nothing_before = _erasures("nothing_held")
    assert await _erase(stack) == ZEROS  # idempotent
    assert _erasures("nothing_held") == nothing_before + 1


async def test_a_delivered_message_loses_its_msgid_index_and_recipient(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=1)
    await stack.client.bind(CUSTOMER, OPENID)
    event = _event()
    await stack.client.post_event(event)
    delivered = await until_status(stack, event["event_id"], "delivered")
    assert await stack.redis.exists(keys.msgid(delivered["msgid"]))

    erased = await _erase(stack)
    assert (erased["binding"], erased["event_records"], erased["timeline_entries"]) == (1, 1, 1)
    assert not await stack.redis.exists(keys.msgid(delivered["msgid"]))
    record = await stack.redis.hgetall(keys.event(0, KEY_ID, event["event_id"]))
    assert {"customer_id", "msgid", "to_hash", "account_tail", "amount", "type"}.isdisjoint(record)
    status, view = await stack.client.call("GET", f"/v1/events/{event['event_id']}")
    assert (status, view["status"]) == (200, "delivered")  # what happened stays, without whom it concerned
    assert view["delivered_at"] is not None and "msgid" not in view
    assert await _personal_left(stack.redis) == []
    assert len(await stack.delivered_to(OPENID)) == 1  # sent once, before the erasure


async def test_an_event_in_flight_ends_no_binding_with_nothing_sent(stack_for: StackFactory) -> None:
    receiver = await WebhookReceiver([SECRET]).start()
    try:
        await _in_flight(stack_for, receiver)
    finally:
        await receiver.stop()


async def _in_flight(stack_for: StackFactory, receiver: WebhookReceiver) -> None:
    stack = await stack_for(workers=0, rate_limit=RateLimit(1, 60), callback_urls={KEY_ID: receiver.url})
    await stack.client.bind(CUSTOMER, OPENID)
    queued, held = _event(), _event(amount="2.00")
    for event in (queued, held):
        await stack.client.post_event(event)
    entries = cast(list[tuple[str, dict[str, str]]], await stack.redis.xrange(keys.stream(0)))
    assert len(entries) == 1

    assert (await _erase(stack))["event_records"] == 2
    # a copy of the entry the erasure could not see (a retry moved back at that very moment) reaches a worker
    await stack.redis.xadd(keys.stream(0), cast(Any, entries[0][1]))
    stack.start_worker(name="after-erasure")

    async def settled() -> bool:
        try:
            left = await backlog(stack.redis)
        except ResponseError:  # NOGROUP: the worker has not made its consumer groups yet
            return False
        return left == 0 and len(receiver.unique()) == 2

    await eventually(settled)
    for event in (queued, held):
        assert await stack.status_of(event["event_id"]) == "no_binding"
        [notice] = receiver.of_event(event["event_id"])  # core banking is told to use SMS instead
        assert notice.body["type"] == "event.no_binding"
        assert notice.body["data"] == {
            "event_id": event["event_id"],
            "customer_id": "",
            "status": "no_binding",
            "reason": "erased",
        }
    assert await stack.delivered_to(OPENID) == []
    sim_stats = await stack.sim("GET", "/sim/stats")
    assert (sim_stats["delivered"], sim_stats["calls"]["send"]) == (0, 0)
    assert await pending(stack.redis) == 0


async def test_an_erased_customer_bound_again_gets_only_new_alerts(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    await stack.client.bind(CUSTOMER, OPENID)
    old = _event()
    await stack.client.post_event(old)
    await _erase(stack)
    await stack.client.bind(CUSTOMER, OPENID)  # the customer binds a new card at once
    new = _event(amount="7.00")
    await stack.client.post_event(new)
    stack.start_worker(name="rebound")
    await until_status(stack, new["event_id"], "delivered")
    assert [m["client_msg_id"] for m in await stack.delivered_to(OPENID)] == [sent_as(new)]
    assert await stack.status_of(old["event_id"]) == "no_binding"


async def test_a_customer_never_seen_answers_zeros(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    assert await _erase(stack, "C-nobody") == ZEROS
    status, body = await stack.client.call("DELETE", "/v1/customers/-bad")
    assert (status, body["error"]["field"]) == (422, "customer_id")


def test_logs_name_the_customer_only_by_a_hash() -> None:
    ref = customer_ref(CUSTOMER)
    assert len(ref) == 16 and CUSTOMER not in ref and ref == customer_ref(CUSTOMER) != customer_ref("C2")


# the scripts, against a real Redis

SHARD, SRC = 0, "cbs"


def _record(event_id: str) -> str:
    return keys.event(SHARD, SRC, event_id)


async def _plant(redis: Redis, event_id: str, **fields: str) -> None:
    base = {
        "hash": "h-" + event_id,
        "status": "queued",
        "customer_id": CUSTOMER,
        "src": SRC,
        "eid": event_id,
        "accepted_ms": "1000",
        "updated_ms": "1000",
        "attempts": "0",
        "type": "debit",
        "amount": "12.00",
        "currency": "CNY",
        "account_tail": "7766",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "priority": "normal",
        "fallback": "",
    }
    await redis.hset(_record(event_id), mapping=cast(Any, {**base, **fields}))
    await redis.expire(_record(event_id), 3600)
    await redis.zadd(keys.customer_events(SHARD, CUSTOMER), {f"{SRC}:{event_id}": 1000})


async def test_erase_records_keeps_only_what_dedup_and_the_lifecycle_read(
    redis: Redis, settings_for: Any
) -> None:
    scripts = Scripts(cast(Settings, settings_for()))
    await _plant(redis, "E-sent", status="delivered", delivered_ms="2000", msgid="42", to_hash="ab" * 16)
    await _plant(redis, "E-held", status="digested", held="rate_limit")
    await _plant(redis, "E-bad", status="dead_lettered", last_error=f"render: bad {ACCOUNT}")
    events = [(SRC, "E-sent"), (SRC, "E-held"), (SRC, "E-bad"), (SRC, "E-expired")]

    assert await scripts.erase_records(redis, SHARD, CUSTOMER, events) == (3, 3)
    sent = await redis.hgetall(_record("E-sent"))
    assert set(sent) == {
        "hash",
        "status",
        "src",
        "eid",
        "accepted_ms",
        "updated_ms",
        "delivered_ms",
        "attempts",
        "fallback",
        "erased_ms",
    }
    assert sent["status"] == "delivered" and sent["hash"] == "h-E-sent"
    held = await redis.hgetall(_record("E-held"))
    assert (held["status"], held["last_error"], held["held"]) == ("no_binding", "erased", "rate_limit")
    assert (await redis.hgetall(_record("E-bad")))["last_error"] == "render"
    assert await redis.ttl(_record("E-sent")) > 0  # the record still ages out with the dedup horizon
    assert not await redis.exists(_record("E-expired"))  # a record that is gone is not recreated
    assert await redis.zcard(keys.customer_events(SHARD, CUSTOMER)) == 0
    assert await scripts.erase_records(redis, SHARD, CUSTOMER, events) == (0, 0)  # idempotent
    assert (await redis.hgetall(_record("E-held")))["updated_ms"] == held["updated_ms"]


async def test_erase_customer_waits_for_every_event_of_the_timeline(redis: Redis, settings_for: Any) -> None:
    scripts = Scripts(cast(Settings, settings_for()))
    await _plant(redis, "E-late")
    await redis.hset(keys.preferences(SHARD, CUSTOMER), mapping={"doc": "{}"})
    await redis.rpush(keys.digest_held(SHARD, CUSTOMER), '{"src":"cbs","eid":"E-late"}')
    await redis.zadd(keys.digest_due(SHARD), {CUSTOMER: 1, "C-other": 2})
    await redis.zadd(keys.rate_log(SHARD, CUSTOMER), {"cbs:E-late": 1})

    assert await scripts.erase_customer(redis, SHARD, CUSTOMER) is None  # an event not yet erased
    assert await redis.exists(keys.preferences(SHARD, CUSTOMER))
    await scripts.erase_records(redis, SHARD, CUSTOMER, [(SRC, "E-late")])
    assert await scripts.erase_customer(redis, SHARD, CUSTOMER) == (1, 1)
    for key in (
        keys.preferences(SHARD, CUSTOMER),
        keys.digest_held(SHARD, CUSTOMER),
        keys.rate_log(SHARD, CUSTOMER),
        keys.customer_events(SHARD, CUSTOMER),
    ):
        assert not await redis.exists(key), key
    assert await redis.zrange(keys.digest_due(SHARD), 0, -1) == ["C-other"]
    assert await scripts.erase_customer(redis, SHARD, CUSTOMER) == (0, 0)
