"""One delivery outcome per test, through a real gateway, worker, Redis and simulator (WECHAT_API.md s.3)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import orjson
import pytest

from gateway.core import keys
from tests.support import APPID, eventually, make_event, sent_as
from tests.workers.flows import Entries, StackFactory, lifecycle, pending, pushgw, scored, until_status

CUSTOMER = "C100234"
OPENID = "oUser_outcome"


async def test_busy_then_success_is_retried_and_delivered_once(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}]})
    event = make_event(customer_id=CUSTOMER)
    assert (await stack.client.post_event(event))[0] == 202

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 2
    [message] = await stack.delivered_to(OPENID)
    assert message["client_msg_id"] == sent_as(event)
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["errcodes"] == {"-1": 1, "0": 1}
    assert await pending(stack.redis) == 0


async def test_http_502_then_success_is_retried_and_delivered_once(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"http_status": 502}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 2
    assert len(await stack.delivered_to(OPENID)) == 1
    assert (await stack.sim("GET", "/sim/stats"))["errcodes"] == {"http_5xx": 1, "0": 1}


async def test_expired_token_mid_run_is_refreshed_and_the_send_repeated_at_once(
    stack_for: StackFactory,
) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    first = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(first)
    await until_status(stack, first["event_id"], "delivered")
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["stable_token"] == 1

    assert (await stack.sim("POST", "/sim/tokens/expire", {"appid": APPID}))["expired"] >= 1
    second = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(second)

    view = await until_status(stack, second["event_id"], "delivered")
    assert view["attempts"] == 1  # the repeat after a refresh is the same attempt, not a scheduled retry
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["errcodes"] == {"0": 2, "42001": 1}
    assert stats["calls"]["stable_token"] == 2
    assert stats["calls"]["send"] == 3
    assert [m["client_msg_id"] for m in await stack.delivered_to(OPENID)] == [sent_as(first), sent_as(second)]


async def test_invalid_credential_forces_a_new_token_when_wechat_repeats_the_old_one(
    stack_for: StackFactory,
) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 40001}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 1
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["errcodes"] == {"40001": 1, "0": 1}
    # the first fetch, the plain refresh that returned the rejected token, and the forced one
    assert stats["calls"]["stable_token"] == 3
    assert len(await stack.delivered_to(OPENID)) == 1


async def test_unsubscribed_user_fails_and_the_binding_is_marked(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("POST", "/sim/unsubscribe", {"openid": OPENID})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "failed")
    assert (view["attempts"], view["last_error"]) == (1, "43004")
    status, binding = await stack.client.call("GET", f"/v1/bindings/{CUSTOMER}")
    assert (status, binding["status"], binding["openid"]) == (200, "unsubscribed", OPENID)

    later = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(later)
    view = await until_status(stack, later["event_id"], "no_binding")
    assert view["attempts"] == 0
    stats = await stack.sim("GET", "/sim/stats")
    assert stats["calls"]["send"] == 1  # the later event never reached WeChat
    assert await stack.delivered_to(OPENID) == []
    assert await pending(stack.redis) == 0


async def test_a_rebound_customer_is_not_marked_by_an_old_openids_failure(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("POST", "/sim/unsubscribe", {"openid": OPENID})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)
    await until_status(stack, event["event_id"], "failed")
    await stack.client.bind(CUSTOMER, "oUser_rebound")

    later = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(later)
    await until_status(stack, later["event_id"], "delivered")
    assert [m["client_msg_id"] for m in await stack.delivered_to("oUser_rebound")] == [sent_as(later)]


async def test_invalid_payload_is_dead_lettered_without_retry(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 47003}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert (view["attempts"], view["last_error"]) == (1, "47003")
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["send"] == 1
    assert await pending(stack.redis) == 0
    assert await stack.redis.zcard(keys.retries(0)) == 0

    status, out = await pushgw(stack.settings.redis_url, "dlq", "list")
    assert status == 0
    [row] = [orjson.loads(line) for line in out.splitlines()]
    assert (row["event_id"], row["customer_id"], row["reason"], row["attempts"]) == (
        event["event_id"],
        CUSTOMER,
        "47003",
        1,
    )
    assert event["account"] not in out


async def test_an_entry_that_cannot_be_rendered_is_dead_lettered_not_reclaimed_for_ever(
    stack_for: StackFactory,
) -> None:
    """The gateway refuses a time at the calendar's end now, but an entry it once let through (or any other
    payload render raises on) must still reach a final state instead of failing on every reclaim."""
    stack = await stack_for(workers=0)
    await stack.client.bind(CUSTOMER, OPENID)
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)
    [(entry_id, fields)] = cast(Entries, await stack.redis.xrange(keys.stream(0)))
    body = orjson.loads(fields["ev"]) | {"occurred_at": "9999-12-31T23:59:59-23:59"}
    poison: dict[Any, Any] = {**fields, "ev": orjson.dumps(body)}
    await stack.redis.xadd(keys.stream(0), poison)
    await stack.redis.xdel(keys.stream(0), entry_id)
    stack.start_worker()

    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert view["last_error"] == "render: OverflowError"
    assert await pending(stack.redis) == 0
    assert await stack.delivered_to(OPENID) == []


async def test_a_send_with_no_clear_answer_is_marked_on_the_entry_it_leaves(stack_for: StackFactory) -> None:
    """The simulator delivers, then answers past the client's timeout: the worker cannot know it was sent, and
    the kept entry says since when (the clock that WeChat's 10-minute dedup window runs on)."""
    stack = await stack_for(max_attempts=1, wechat_timeout_s=0.3)
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"delay_ms": 1500}]})
    event = make_event(customer_id=CUSTOMER)
    before_ms = int(time.time() * 1000)
    await stack.client.post_event(event)
    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert view["last_error"] == "max_attempts: timeout"
    [(_, fields)] = cast(Entries, await stack.redis.xrange(keys.dead_letters(0)))
    assert before_ms <= int(orjson.loads(fields["entry"])["unc"]) <= int(time.time() * 1000)


async def test_a_send_with_no_clear_answer_is_not_repeated_past_wechats_dedup_window(
    stack_for: StackFactory,
) -> None:
    """WeChat drops a repeat of the same client_msg_id for 10 minutes only: past that, a resend could be a
    second alert, so the event fails (and its fallback notice asks core banking to reach the customer)."""
    stack = await stack_for(workers=0)
    await stack.client.bind(CUSTOMER, OPENID)
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)
    [(entry_id, fields)] = cast(Entries, await stack.redis.xrange(keys.stream(0)))
    eleven_minutes_ago_ms = int(time.time() * 1000) - 11 * 60 * 1000
    retried: dict[Any, Any] = {**fields, "att": "1", "unc": str(eleven_minutes_ago_ms)}
    await stack.redis.xadd(keys.stream(0), retried)  # its retry, as finish.lua puts it back
    await stack.redis.xdel(keys.stream(0), entry_id)
    stack.start_worker()

    view = await until_status(stack, event["event_id"], "failed")
    assert (view["attempts"], view["last_error"]) == (1, "unclear_past_dedup_window")
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["send"] == 0
    assert await pending(stack.redis) == 0


async def test_no_binding_is_recorded_and_acknowledged(stack_for: StackFactory) -> None:
    stack = await stack_for()
    event = make_event(customer_id="C-unbound")
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "no_binding")
    assert (view["attempts"], view["last_error"]) == (0, "no_binding")
    assert await pending(stack.redis) == 0
    assert (await stack.sim("GET", "/sim/stats"))["calls"]["send"] == 0


async def test_max_attempts_dead_letters_and_replay_delivers_once(stack_for: StackFactory) -> None:
    stack = await stack_for(max_attempts=3)
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}] * 3})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert view["attempts"] == 3
    assert view["last_error"].startswith("max_attempts")
    assert await stack.delivered_to(OPENID) == []
    status, out = await pushgw(stack.settings.redis_url, "dlq", "list", "--event-id", event["event_id"])
    assert status == 0
    [row] = [orjson.loads(line) for line in out.splitlines()]
    assert row["reason"].startswith("max_attempts")

    status, out = await pushgw(stack.settings.redis_url, "dlq", "replay", "--event-id", event["event_id"])
    assert (status, orjson.loads(out)) == (0, {"replayed": 1})

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 1
    [message] = await stack.delivered_to(OPENID)
    assert message["client_msg_id"] == sent_as(event)
    assert (await pushgw(stack.settings.redis_url, "dlq", "list"))[1] == ""
    assert await pending(stack.redis) == 0


async def test_a_replayed_letter_that_aged_out_is_tried_again_not_dead_lettered_at_once(
    stack_for: StackFactory,
) -> None:
    """The runbook's "after midnight, replay what aged out": the replayed entry's age counts from the replay,
    so one more busy answer schedules a retry instead of dead-lettering it again."""
    stack = await stack_for(max_age_s=1, retry_base_s=0.05, retry_cap_s=0.1)
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 45009}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)
    view = await until_status(stack, event["event_id"], "dead_lettered")
    assert view["last_error"] == "max_age: 45009"  # midnight is further away than its age allows

    await asyncio.sleep(1.2)  # it is now older than max_age_s since it was accepted
    await stack.stop_workers()  # midnight: the pause ends (a fresh worker), WeChat's quota is new
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}]})
    stack.start_worker(name="after-midnight")
    status, out = await pushgw(stack.settings.redis_url, "dlq", "replay", "--event-id", event["event_id"])
    assert (status, orjson.loads(out)) == (0, {"replayed": 1})

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 2  # the busy answer, then the delivery
    assert [m["client_msg_id"] for m in await stack.delivered_to(OPENID)] == [sent_as(event)]


async def test_minute_quota_schedules_the_retry_after_the_next_minute(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": 45011}]})
    event = make_event(customer_id=CUSTOMER)
    before = datetime.now(UTC)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "retrying")
    assert (view["attempts"], view["last_error"]) == (0, "45011")  # WeChat sent nothing: no attempt spent

    async def scheduled() -> bool:
        return bool(await stack.redis.zcard(keys.retries(0)))

    await eventually(scheduled)
    [(_, due_ms)] = await scored(stack.redis, keys.retries(0))
    next_minute = before.replace(second=0, microsecond=0) + timedelta(minutes=1)
    assert due_ms >= next_minute.timestamp() * 1000
    assert due_ms <= (next_minute + timedelta(seconds=7)).timestamp() * 1000
    assert await stack.delivered_to(OPENID) == []


@pytest.mark.parametrize("errcode", [40003, 43019])
async def test_other_permanent_answers_fail_and_mark_the_binding(
    stack_for: StackFactory, errcode: int
) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": errcode}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "failed")
    assert (view["attempts"], view["last_error"]) == (1, str(errcode))
    _, binding = await stack.client.call("GET", f"/v1/bindings/{CUSTOMER}")
    assert binding["status"] == {40003: "invalid", 43019: "blocked"}[errcode]


async def test_lifecycle_of_a_delivered_event(stack_for: StackFactory) -> None:
    stack = await stack_for()
    await stack.client.bind(CUSTOMER, OPENID)
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)
    view = await until_status(stack, event["event_id"], "delivered")
    [message] = await stack.delivered_to(OPENID)
    assert view["msgid"] == str(message["msgid"])
    assert view["delivered_at"] is not None
    assert view["accepted_at"] <= view["delivered_at"]
    assert (await lifecycle(stack, event["event_id"]))["status"] == "delivered"


async def test_a_probe_answered_neither_way_does_not_hold_the_circuit_open(stack_for: StackFactory) -> None:
    """Two busy answers open the circuit; its half-open probe is answered 43019 (WeChat is up, but that is
    neither a success nor a failure). Later events of other customers must still go out."""
    stack = await stack_for(breaker_failures=2, breaker_open_s=0.5)
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.client.bind("C-other", "oUser_other")
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}, {"errcode": -1}, {"errcode": 43019}]})
    probe = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(probe)
    view = await until_status(stack, probe["event_id"], "failed")
    assert (view["attempts"], view["last_error"]) == (3, "43019")

    later = make_event(customer_id="C-other")
    await stack.client.post_event(later)
    await until_status(stack, later["event_id"], "delivered", timeout_s=15)
    assert len(await stack.delivered_to("oUser_other")) == 1


async def test_a_reply_lost_to_the_client_timeout_is_resent_and_deduplicated(stack_for: StackFactory) -> None:
    """WeChat delivered, but its answer came after our timeout: the resend with the same client_msg_id
    answers 0 again and the customer still gets one message."""
    stack = await stack_for(wechat_timeout_s=0.3)
    await stack.client.bind(CUSTOMER, OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"delay_ms": 1500}]})
    event = make_event(customer_id=CUSTOMER)
    await stack.client.post_event(event)

    view = await until_status(stack, event["event_id"], "delivered")
    assert view["attempts"] == 2
    [message] = await stack.delivered_to(OPENID)
    assert view["msgid"] == str(message["msgid"])
    stats = await stack.sim("GET", "/sim/stats")
    assert (stats["delivered"], stats["deduplicated"]) == (1, 1)
