"""WeChat failing under load, through the real gateway, worker, Redis and simulator, judged by the one oracle.

Busy answers, 5xx and connection resets mixed; answers slower than the client timeout (resent with the same
client_msg_id: one message reaches the user); an outage (the circuit opens, only probes go out, the backlog
drains after); 45011 and 45009 (the appid pauses, and the retry is scheduled for the next minute or after
midnight Asia/Shanghai without spending attempts: the schedule is asserted, then time is compressed by making
it due now); and poison messages, dead-lettered without holding the others back.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.settings import RateLimit
from tests.conftest import Stack
from tests.faults.load import bind_customers, events_for, send_all
from tests.faults.oracle import FINAL, Oracle
from tests.support import APP_SECRET, APPID, eventually, make_event
from tests.workers.flows import StackFactory, backlog, lifecycle, pending, scored
from wechatsim.app import SimConfig
from workers.render import SHANGHAI, Templates

pytestmark = pytest.mark.e2e

EVENTS = 200
CUSTOMERS = 20
TIMEOUT_S = 0.3
POISON_APPID = "wx_poison_app"
POISON_SECRET = "poison_app_secret"  # noqa: S105 - a fixture app secret
RATE = RateLimit(1000, 60)  # the per-customer limit is not under test here


def _metric(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _stats(stack: Stack) -> dict[str, Any]:
    stats: dict[str, Any] = await stack.sim("GET", "/sim/stats")
    return stats


async def _loaded(
    stack: Stack, scenario: str, prefix: str, events: int = EVENTS, concurrency: int = 16
) -> tuple[Oracle, list[dict[str, Any]]]:
    """An oracle and `events` events of CUSTOMERS bound customers, sent `concurrency` at a time."""
    load = f"{events} events, {CUSTOMERS} customers, {concurrency} concurrent senders"
    oracle = Oracle(stack, scenario, load)
    customers = await bind_customers(oracle, CUSTOMERS, prefix)
    sent = events_for(customers, events)
    answers = await send_all(oracle, sent, concurrency=concurrency, attempts=5)
    assert set(answers) == {202}
    return oracle, sent


async def _due_now(redis: Redis, key: str) -> int:
    """Compress time: every scheduled retry in `key` becomes due now (the minute or the night has passed)."""
    members = [member for member, _ in await scored(redis, key)]
    if members:
        await redis.zadd(key, dict.fromkeys(members, time.time() * 1000), xx=True)
    return len(members)


# (scenario, faults, the attempt labels the faults produce)
MIXED: list[tuple[str, dict[str, Any], set[str]]] = [
    (
        "busy/5xx/resets 30%",
        {"errcode_rates": {"-1": 0.1}, "http_5xx_rate": 0.1, "reset_rate": 0.1, "seed": 5},
        {"-1", "http_502", "connection"},
    ),
    ("slow past the client timeout 30%", {"slow_rate": 0.3, "slow_ms": 1000, "seed": 5}, {"timeout"}),
]


@pytest.mark.parametrize(("scenario", "faults", "labels"), MIXED, ids=["busy_5xx_resets", "slow"])
async def test_failing_sends_are_retried_and_each_event_reaches_the_user_once(
    stack_for: StackFactory, scenario: str, faults: dict[str, Any], labels: set[str]
) -> None:
    """A third of the sends fail while the load comes in; every event is retried with the same client_msg_id
    and delivered once. A slow answer was delivered before the client gave up on it: its resend is
    deduplicated by WeChat, not delivered again."""
    stack = await stack_for(rate_limit=RATE, wechat_timeout_s=TIMEOUT_S, max_attempts=30, breaker_open_s=0.5)
    retried_before = {
        label: _metric("pushgw_deliveries_total", {"outcome": "retry", "errcode": label}) for label in labels
    }
    await stack.sim("PUT", "/sim/faults", faults)
    oracle, _ = await _loaded(stack, scenario, "mixed")

    counts = await oracle.verdict()
    stats = await _stats(stack)
    counts.notes.update(sends=stats["calls"]["send"], answers=stats["errcodes"], resent=stats["deduplicated"])
    assert counts.accepted == counts.delivered == EVENTS
    assert stats["delivered"] == EVENTS
    for label in labels:  # each kind of failure happened and was retried
        retried = _metric("pushgw_deliveries_total", {"outcome": "retry", "errcode": label})
        assert retried > retried_before[label], label
    if "timeout" in labels:
        assert stats["deduplicated"] >= 1
        assert stats["errcodes"]["0"] == stats["delivered"] + stats["deduplicated"]
    else:
        assert stats["deduplicated"] == 0  # a reset or refused send was never processed
    assert await backlog(stack.redis) == 0


async def test_an_outage_opens_the_circuit_only_probes_go_out_and_the_backlog_drains(
    stack_for: StackFactory,
) -> None:
    """WeChat is down for a (time-compressed) while the load comes in. The calls that reach it during the
    outage are bounded by the breaker: the failures that open it, the sends already in flight, and one probe
    per open period. The deliveries held back meanwhile are deferred unsent, and all drain after."""
    failures, open_s, outage_s, concurrency = 3, 0.4, 3.0, 4
    stack = await stack_for(
        rate_limit=RATE,
        breaker_failures=failures,
        breaker_open_s=open_s,
        worker_concurrency=concurrency,
        read_batch=concurrency,
        max_attempts=50,
    )
    oracle = Oracle(stack, "wechat outage", f"100 events during a {outage_s:.0f} s outage, 8 senders")
    customers = await bind_customers(oracle, CUSTOMERS, "outage")
    warmup = make_event(customer_id=customers[0])  # the token is fetched before the outage
    assert await oracle.post(warmup) == 202
    await eventually(lambda: _is_final(oracle, warmup["event_id"]), timeout_s=10)
    deferred_before = _metric("pushgw_retries_total", {"reason": "circuit_open"})

    await stack.sim("PUT", "/sim/faults", {"outage_for_s": outage_s})
    ends_at = time.monotonic() + outage_s
    assert set(await send_all(oracle, events_for(customers, 100), concurrency=8, attempts=5)) == {202}
    assert time.monotonic() < ends_at, "the load must arrive during the outage"

    counts = await oracle.verdict()
    counts.recovery_s = round(time.monotonic() - ends_at, 1)  # from the outage's end until all final
    stats = await _stats(stack)
    refused = stats["errcodes"]["http_5xx"]  # every send that reached WeChat during the outage
    deferred = _metric("pushgw_retries_total", {"reason": "circuit_open"}) - deferred_before
    probes = math.ceil(outage_s / open_s) + 1
    counts.notes.update(sends_during_outage=refused, deferred_unsent=int(deferred), probe_bound=probes)
    assert counts.delivered == counts.accepted == 101
    assert failures <= refused <= failures + (concurrency - 1) + probes
    assert deferred > refused  # most deliveries during the outage never went out
    assert stats["calls"]["send"] == refused + 101
    assert _metric("pushgw_circuit_open", {"appid": APPID}) == 0  # closed again by the first success


async def _is_final(oracle: Oracle, event_id: str) -> bool:
    return (await oracle.statuses()).get(event_id) in FINAL


def _next_minute_ms(moment: datetime) -> float:
    return (moment.replace(second=0, microsecond=0) + timedelta(minutes=1)).timestamp() * 1000


async def test_the_minute_quota_45011_retries_after_the_next_minute(stack_for: StackFactory) -> None:
    """Past the minute quota WeChat answers 45011: the appid pauses until the next minute, and the retry is
    scheduled just after it starts (0-6 s past it: the jitter), no attempt spent. Waiting a minute is too slow
    for a test, so the schedule is asserted, then the minute is compressed (the quota lifted, the retries made
    due) and all deliver."""
    stack = await stack_for(rate_limit=RATE)
    await stack.sim("PUT", "/sim/faults", {"minute_quota": 10})
    before = datetime.now(SHANGHAI)
    oracle, _ = await _loaded(stack, "45011 minute quota", "minute", events=60)

    async def settled() -> bool:
        statuses = set((await oracle.statuses()).values())
        return statuses <= {"delivered", "retrying"} and await pending(stack.redis) == 0

    await eventually(settled, timeout_s=20)
    after = datetime.now(SHANGHAI)
    statuses = await oracle.statuses()
    limited = [event_id for event_id, status in statuses.items() if status == "retrying"]
    assert len(limited) >= 60 - 2 * 10  # the load may straddle one minute boundary, not two
    errors: Counter[tuple[int, str]] = Counter()
    for event_id in limited:
        view = await lifecycle(stack, event_id)
        errors[(view["attempts"], view["last_error"])] += 1
    # nothing was sent, so no attempt is spent; the ones behind the paused appid never reached WeChat
    assert set(errors) <= {(0, "45011"), (0, "circuit_open")}
    assert _metric("pushgw_circuit_open", {"appid": APPID}) == 0  # a minute's pause does not page
    scheduled = await scored(stack.redis, keys.retries(0))
    assert len(scheduled) == len(limited)
    for _, due_ms in scheduled:
        assert _next_minute_ms(before) - 50 <= due_ms <= _next_minute_ms(after) + 6000
        assert due_ms % 60_000 < 6000  # Shanghai is UTC+8: its minutes start with UTC's

    await stack.stop_workers()  # the next minute: the pause ends (a fresh worker), WeChat's quota is new
    await stack.sim("PUT", "/sim/faults", {})
    moved = await _due_now(stack.redis, keys.retries(0))
    stack.start_worker(name="next-minute")
    counts = await oracle.verdict()
    counts.notes.update(
        limited_45011=errors[(0, "45011")], deferred_unsent=errors[(0, "circuit_open")], compressed=moved
    )
    assert counts.delivered == counts.accepted == 60


async def test_the_daily_quota_45009_pauses_the_appid_until_midnight_without_spending_attempts(
    stack_for: StackFactory,
) -> None:
    """45009: the appid pauses until Shanghai midnight; the entries that got it and those deferred unsent
    behind the pause are scheduled after midnight, the deferred ones with no attempt spent. Then the night
    is compressed (a new worker, the quota reset, the retries due now) and everything is delivered once."""
    stack = await stack_for(rate_limit=RATE, max_age_s=2 * 86400)
    await stack.sim("PUT", "/sim/faults", {"daily_quota": 10})
    before = datetime.now(SHANGHAI)
    oracle, _ = await _loaded(stack, "45009 daily quota", "daily", events=60)

    async def settled() -> bool:
        tally = Counter((await oracle.statuses()).values())
        return tally == Counter({"delivered": 10, "retrying": 50}) and await pending(stack.redis) == 0

    await eventually(settled, timeout_s=20)
    midnight_ms = (before + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    errors: Counter[tuple[int, str]] = Counter()
    for event_id, status in (await oracle.statuses()).items():
        if status == "retrying":
            view = await lifecycle(stack, event_id)
            errors[(view["attempts"], view["last_error"])] += 1
    assert set(errors) <= {(0, "45009"), (0, "circuit_open")}
    assert errors[(0, "circuit_open")] >= 1, "nothing was held back by the paused appid"
    scheduled = await scored(stack.redis, keys.retries(0))
    assert len(scheduled) == 50
    assert all(due_ms >= midnight_ms.timestamp() * 1000 for _, due_ms in scheduled)
    assert _metric("pushgw_circuit_open", {"appid": APPID}) == 1
    stats = await _stats(stack)
    assert stats["calls"]["send"] == 10 + errors[(0, "45009")]  # the deferred ones never reached WeChat

    await stack.stop_workers()  # midnight: the pause ends (a fresh worker), WeChat's quota is new
    await stack.sim("PUT", "/sim/faults", {})
    await _due_now(stack.redis, keys.retries(0))
    stack.start_worker(name="after-midnight")
    counts = await oracle.verdict()
    counts.notes.update(quota_45009=errors[(0, "45009")], deferred_unsent=errors[(0, "circuit_open")])
    assert counts.delivered == counts.accepted == 60


def _poison_stack_config() -> dict[str, Any]:
    shipped = Templates.load()
    ids = {**shipped.event_templates, "digest": shipped.digest_template}
    return {
        "sim_config": SimConfig(apps={APPID: APP_SECRET, POISON_APPID: POISON_SECRET}),
        "wechat_accounts": {POISON_APPID: POISON_SECRET},
        "wechat_templates": {POISON_APPID: ids},
    }


async def _post_poison(stack: Stack, oracle: Oracle) -> tuple[list[str], str]:
    """Three events of a customer whose every send WeChat answers -1 (busy), and one event that cannot be
    rendered (an amount of 11 integer digits: more than a WeChat amount value holds). The gateway refuses
    such an amount now, so the entry is rewritten in the stream before the worker starts: any payload render
    raises on must still reach a final state. Starts the stack's worker."""
    status, _ = await stack.client.call(
        "PUT", "/v1/bindings/C-poison", {"openid": "oUser_poison", "appid": POISON_APPID}
    )
    assert status == 200
    oracle.openids["C-poison"] = "oUser_poison"
    await stack.sim("PUT", f"/sim/faults?appid={POISON_APPID}", {"errcode_rates": {"-1": 1.0}})
    busy = [make_event(customer_id="C-poison") for _ in range(3)]
    await oracle.bind("C-huge", "oUser_huge")
    huge = make_event(customer_id="C-huge", amount="99.99")
    for event in [*busy, huge]:
        assert await oracle.post(event) == 202
    for entry_id, fields in cast(list[tuple[str, dict[str, str]]], await stack.redis.xrange(keys.stream(0))):
        if fields["eid"] == huge["event_id"]:
            body = orjson.loads(fields["ev"]) | {"amount": "99999999999.99"}
            poison: dict[Any, Any] = {**fields, "ev": orjson.dumps(body)}
            await stack.redis.xadd(keys.stream(0), poison)
            await stack.redis.xdel(keys.stream(0), entry_id)
    stack.start_worker()
    return [event["event_id"] for event in busy], huge["event_id"]


async def test_poison_messages_are_dead_lettered_without_holding_the_others_back(
    stack_for: StackFactory,
) -> None:
    """Poison first, the load behind it: every other event is delivered while the poison is still being
    retried; then WeChat calls the poison invalid (40037) and it is dead-lettered with the reason."""
    stack = await stack_for(
        workers=0,
        rate_limit=RATE,
        max_attempts=1000,
        breaker_failures=3,
        breaker_open_s=0.3,
        **_poison_stack_config(),
    )
    oracle = Oracle(stack, "poison messages", f"4 poison then {EVENTS} events, {CUSTOMERS} customers")
    busy, huge = await _post_poison(stack, oracle)
    customers = await bind_customers(oracle, CUSTOMERS, "poison")
    others = events_for(customers, EVENTS)
    assert set(await send_all(oracle, others)) == {202}

    async def others_final() -> bool:
        statuses = await oracle.statuses()
        return all(statuses[event["event_id"]] in FINAL for event in others)

    await eventually(others_final, timeout_s=30)
    statuses = await oracle.statuses()
    assert {statuses[event["event_id"]] for event in others} == {"delivered"}
    assert {statuses[event_id] for event_id in busy} == {"retrying"}, "the poison finished first"
    view = await lifecycle(stack, huge)
    assert (view["status"], view["attempts"]) == ("dead_lettered", 0)
    assert view["last_error"].startswith("render:")

    async def retried() -> bool:  # a real poison loop: it keeps coming back, alone
        views = [await lifecycle(stack, event_id) for event_id in busy]
        return all(view["attempts"] >= 2 for view in views)

    await eventually(retried, timeout_s=20)
    await stack.sim("PUT", f"/sim/faults?appid={POISON_APPID}", {"errcode_rates": {"40037": 1.0}})
    counts = await oracle.verdict()
    counts.notes.update(poison_sends=(await _stats(stack))["errcodes"].get("-1", 0))
    assert (counts.delivered, counts.dead_lettered) == (EVENTS, 4)
    dead = cast(list[tuple[str, dict[str, str]]], await stack.redis.xrange(keys.dead_letters(0), "-", "+"))
    reasons = {orjson.loads(fields["entry"])["eid"]: fields["reason"] for _, fields in dead}
    assert set(reasons) == {*busy, huge}
    assert {reasons[event_id] for event_id in busy} == {"40037"}
