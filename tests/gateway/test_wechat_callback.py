"""GET|POST /wechat/callback: WeChat's URL check, and finish events from the simulator recorded on the
event (GET /v1/events/{id}), deduplicated, `failed:user block` marking the binding, counted in metrics."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.handlers.wechat_callback import parse_event, wechat_signature
from tests.conftest import Stack
from tests.support import eventually, make_event

pytestmark = pytest.mark.e2e

TOKEN = "gateway-callback-token"  # noqa: S105 - a fixture callback token
OPENID = "oFinishUser_0001"
PATH = "/wechat/callback"


def _signed(token: str = TOKEN, timestamp: str = "1700000000", nonce: str = "n0nce") -> dict[str, str]:
    return {"signature": wechat_signature(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


def _finish_xml(msgid: str, status: str = "success", openid: str = OPENID, at: int = 1395658920) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
        f"</FromUserName><CreateTime>{at}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status></xml>"
    ).encode()


async def _post(stack: Stack, body: bytes, params: dict[str, str] | None = None) -> tuple[int, str]:
    url = stack.client.url + PATH
    async with stack.session.post(url, params=params or _signed(), data=body) as resp:
        return resp.status, await resp.text()


def _count(status: str) -> float:
    return REGISTRY.get_sample_value("pushgw_wechat_finish_events_total", {"status": status}) or 0.0


async def _stack(stack_for: Callable[..., Any], workers: int = 1) -> Stack:
    stack: Stack = await stack_for(workers=workers, wechat_callback_token=TOKEN)
    return stack


async def _callback(stack: Stack, **shares: float) -> None:
    section = {"url": stack.client.url + PATH, "token": TOKEN, "retry_delay_ms": 0, **shares}
    faults = await stack.sim("PUT", "/sim/faults", {"callback": section})
    assert faults["callback"]["url"] == section["url"], faults


async def _deliver(stack: Stack, customer_id: str = "C100234") -> str:
    await stack.client.bind(customer_id, OPENID)
    event = make_event(customer_id=customer_id)
    assert (await stack.client.post_event(event))[0] == 202
    event_id: str = event["event_id"]
    return event_id


async def _view(stack: Stack, event_id: str) -> dict[str, Any]:
    status, body = await stack.client.call("GET", f"/v1/events/{event_id}")
    assert status == 200
    view: dict[str, Any] = body
    return view


async def _finished(stack: Stack, event_id: str) -> dict[str, Any]:
    async def done() -> bool:
        return "finish_status" in await _view(stack, event_id)

    await eventually(done)
    return await _view(stack, event_id)


async def test_url_verification_echoes_echostr(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for, workers=0)
    async with stack.session.get(stack.client.url + PATH, params={**_signed(), "echostr": "e123"}) as resp:
        assert (resp.status, await resp.text()) == (200, "e123")
    wrong = {**_signed("wrong"), "echostr": "x"}
    async with stack.session.get(stack.client.url + PATH, params=wrong) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "unauthorized"


async def test_without_a_token_the_endpoint_is_404(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    async with stack.session.get(stack.client.url + PATH, params=_signed("")) as resp:
        assert resp.status == 404
    assert (await _post(stack, _finish_xml("1"), _signed("")))[0] == 404


async def test_a_finish_event_reaches_the_lifecycle(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    await _callback(stack)
    before = _count("success")
    latencies = REGISTRY.get_sample_value("pushgw_delivery_finish_latency_seconds_count") or 0.0
    event_id = await _deliver(stack)
    view = await _finished(stack, event_id)
    assert view["status"] == "delivered"
    assert view["finish_status"] == "success"
    assert view["finished_at"] is not None
    [posted] = (await stack.sim("GET", "/sim/callbacks"))["callbacks"]
    assert (str(posted["msgid"]), posted["acknowledged"], posted["tries"]) == (view["msgid"], True, 1)
    assert _count("success") == before + 1
    assert REGISTRY.get_sample_value("pushgw_delivery_finish_latency_seconds_count") == latencies + 1
    _, binding = await stack.client.call("GET", "/v1/bindings/C100234")
    assert binding["status"] == "active"


async def test_user_block_marks_the_binding(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    await _callback(stack, user_block_rate=1.0)
    event_id = await _deliver(stack, "C200001")
    assert (await _finished(stack, event_id))["finish_status"] == "failed:user block"
    _, binding = await stack.client.call("GET", "/v1/bindings/C200001")
    assert binding["status"] == "blocked"


async def test_a_double_is_recorded_once(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    await _callback(stack, system_failed_rate=1.0, duplicate_rate=1.0)
    before_failed, before_duplicate = _count("failed: system failed"), _count("duplicate")
    event_id = await _deliver(stack)
    assert (await _finished(stack, event_id))["finish_status"] == "failed: system failed"

    async def both_posted() -> bool:
        posted = (await stack.sim("GET", "/sim/callbacks"))["callbacks"]
        return len(posted) == 2 and all(p["acknowledged"] for p in posted)

    await eventually(both_posted)
    assert _count("failed: system failed") - before_failed + _count("duplicate") - before_duplicate == 2
    assert _count("failed: system failed") >= before_failed + 1


async def test_posts_that_are_not_finish_events_or_unknown_answer_success(
    stack_for: Callable[..., Any],
) -> None:
    stack = await _stack(stack_for, workers=0)
    before = _count("unknown_msgid")
    assert await _post(stack, _finish_xml("999")) == (200, "success")
    assert _count("unknown_msgid") == before + 1
    subscribe = b"<xml><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event></xml>"
    assert await _post(stack, subscribe) == (200, "success")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not xml", 400),
        (b"<html></html>", 400),
        (b'<!DOCTYPE xml [<!ENTITY a "aaaa">]><xml><MsgID>&a;</MsgID></xml>', 400),
        (b"<xml>" + b"<a>x</a>" * 2000 + b"</xml>", 413),
    ],
)
async def test_bad_bodies_are_refused(stack_for: Callable[..., Any], body: bytes, status: int) -> None:
    stack = await _stack(stack_for, workers=0)
    assert (await _post(stack, body))[0] == status


async def test_a_bad_signature_is_refused(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for, workers=0)
    params = _signed() | {"nonce": "other"}
    assert (await _post(stack, _finish_xml("1"), params))[0] == 401


def test_parse_event_reads_wechat_xml() -> None:
    assert parse_event(_finish_xml("200163836", "failed: system failed")) == {
        "ToUserName": "gh_7f083739789a",
        "FromUserName": OPENID,
        "CreateTime": "1395658920",
        "MsgType": "event",
        "Event": "TEMPLATESENDJOBFINISH",
        "MsgID": "200163836",
        "Status": "failed: system failed",
    }
    assert wechat_signature("token", "1700000000", "abc") == hashlib.sha1(b"1700000000abctoken").hexdigest()  # noqa: S324


async def test_finish_event_script_writes_only_existing_records(
    redis: Redis, settings_for: Callable[..., Settings]
) -> None:
    scripts = Scripts(settings_for())
    live, gone = keys.event(0, "cbs", "E1"), keys.event(0, "cbs", "E2")
    await redis.hset(live, mapping={"status": "delivered"})
    assert await scripts.finish_event(redis, 0, [live, gone], "success", 1_700_000_000_000) == 1
    assert await redis.hgetall(live) == {
        "status": "delivered",
        "finish_status": "success",
        "finished_ms": "1700000000000",
    }
    assert await redis.exists(gone) == 0
