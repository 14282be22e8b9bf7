"""GET|POST /wechat/callback: WeChat's URL check, and finish events from the simulator recorded on the
event (GET /v1/events/{id}), deduplicated, `failed:user block` marking the binding, counted in metrics;
stale timestamps, receipts naming another recipient and XML with a DTD (in any encoding) change nothing.
Safe mode is in test_wechat_safe_mode.py."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.errors import BadRequest
from gateway.core.recipient import recipient_hash
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from gateway.handlers.wechat_callback import NOT_VERIFIED, parse_event, wechat_signature
from tests.conftest import Stack
from tests.gateway.helpers import assert_error_shape
from tests.support import KEY_ID, eventually, make_event

pytestmark = pytest.mark.e2e

TOKEN = "gateway-callback-token"  # noqa: S105 - a fixture callback token
OPENID = "oFinishUser_0001"
OTHER_OPENID = "oSomeoneElse_0002"
PATH = "/wechat/callback"
THIRTY_DAYS_S = 30 * 86400


def _now() -> str:
    return str(int(time.time()))


def _signed(token: str = TOKEN, timestamp: str | None = None, nonce: str = "n0nce") -> dict[str, str]:
    timestamp = _now() if timestamp is None else timestamp
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


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("pushgw_wechat_callbacks_refused_total", {"reason": reason}) or 0.0


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


async def _delivered(stack: Stack, customer_id: str) -> str:
    """An event delivered (no callback configured in the simulator): its msgid indexed, no finish yet."""
    event_id = await _deliver(stack, customer_id)

    async def delivered() -> bool:
        return bool((await _view(stack, event_id))["status"] == "delivered")

    await eventually(delivered)
    return event_id


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
        (b"<!doctype xml><xml/>", 400),
        (b'<!DOCTYPE xml SYSTEM "http://127.0.0.1:9/x.dtd"><xml/>', 400),
        (b"<xml>" + b"<a>x</a>" * 2000 + b"</xml>", 413),
    ],
)
async def test_bad_bodies_are_refused(stack_for: Callable[..., Any], body: bytes, status: int) -> None:
    stack = await _stack(stack_for, workers=0)
    assert (await _post(stack, body))[0] == status


async def test_a_bad_signature_is_refused(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for, workers=0)
    params = _signed() | {"nonce": "other"}
    before = _refused("signature")
    assert (await _post(stack, _finish_xml("1"), params))[0] == 401
    assert _refused("signature") == before + 1


def _billion_laughs(encoding: str) -> bytes:
    entities = '<!ENTITY l0 "ha">' + "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    declaration = f'<?xml version="1.0" encoding="{encoding}"?>'
    return f"{declaration}<!DOCTYPE xml [{entities}]><xml><MsgID>&l9;</MsgID></xml>".encode(encoding)


_FINISH_WITH_ENTITY = (
    '<!DOCTYPE xml [<!ENTITY st "failed:user block">]><xml><FromUserName>oFinishUser_0001</FromUserName>'
    "<CreateTime>1</CreateTime><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID><Status>&st;</Status></xml>"
)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_billion_laughs("utf-8"), id="billion-laughs-utf8"),
        pytest.param(_billion_laughs("utf-16"), id="billion-laughs-utf16"),
        pytest.param(_billion_laughs("utf-16-le")[2:], id="billion-laughs-utf16le-no-bom"),
        pytest.param(_FINISH_WITH_ENTITY.encode("utf-16"), id="entity-utf16"),
        pytest.param(_FINISH_WITH_ENTITY.encode("utf-16-be"), id="entity-utf16be-no-bom"),
        pytest.param(_FINISH_WITH_ENTITY.encode("utf-32"), id="entity-utf32"),
        pytest.param(b'<?xml version="1.0" encoding="x-no-such-codec"?><xml/>', id="unknown-encoding"),
    ],
)
async def test_a_dtd_in_any_encoding_is_refused_without_expansion(
    stack_for: Callable[..., Any], body: bytes
) -> None:
    """The byte search for `<!doctype` was blind to UTF-16: the parser now refuses any DTD itself."""
    stack = await _stack(stack_for, workers=0)
    before = _refused("xml")
    status, text = await _post(stack, body)
    assert status == 400, text
    assert_error_shape(orjson.loads(text))
    assert "haha" not in text
    assert _refused("xml") == before + 1


def test_parse_event_refuses_a_dtd_in_utf16_before_any_expansion() -> None:
    with pytest.raises(BadRequest):
        parse_event(_FINISH_WITH_ENTITY.encode("utf-16"))
    assert parse_event("<xml><MsgID>7</MsgID></xml>".encode("utf-16")) == {"MsgID": "7"}


async def test_a_stale_timestamp_is_refused(stack_for: Callable[..., Any]) -> None:
    """The finding: a 30-day-old signed query string with a forged body set finish_status and blocked the
    binding. A timestamp more than 300 s away (either way) is now refused, signature or not."""
    stack = await _stack(stack_for)
    event_id = await _delivered(stack, "C300001")
    msgid = (await _view(stack, event_id))["msgid"]
    before = _refused("stale")
    for skew_s in (-THIRTY_DAYS_S, -301, 301):
        old = _signed(timestamp=str(int(time.time()) + skew_s))
        status, text = await _post(stack, _finish_xml(msgid, "failed:user block"), old)
        assert status == 401
        assert orjson.loads(text) == {"error": {"code": "unauthorized", "message": NOT_VERIFIED}}
        async with stack.session.get(stack.client.url + PATH, params={**old, "echostr": "e"}) as resp:
            assert resp.status == 401
    assert _refused("stale") == before + 6
    assert "finish_status" not in await _view(stack, event_id)
    _, binding = await stack.client.call("GET", "/v1/bindings/C300001")
    assert binding["status"] == "active"
    assert await _post(stack, _finish_xml(msgid), _signed(timestamp=str(int(time.time()) - 290))) == (
        200,
        "success",
    )


async def test_a_receipt_naming_another_recipient_changes_nothing(stack_for: Callable[..., Any]) -> None:
    """A fresh, well-signed `failed:user block` for our msgid but another FromUserName: answered `success`
    (WeChat would retry anything else), counted, and neither the record nor any binding changes."""
    stack = await _stack(stack_for)
    event_id = await _delivered(stack, "C300002")
    await stack.client.bind("C300003", OTHER_OPENID)
    msgid = (await _view(stack, event_id))["msgid"]
    before = _count("recipient_mismatch")
    forged = _finish_xml(msgid, "failed:user block", openid=OTHER_OPENID)
    assert await _post(stack, forged) == (200, "success")
    assert _count("recipient_mismatch") == before + 1
    assert "finish_status" not in await _view(stack, event_id)
    for customer_id in ("C300002", "C300003"):
        _, binding = await stack.client.call("GET", f"/v1/bindings/{customer_id}")
        assert binding["status"] == "active", customer_id
    assert await stack.redis.xlen(keys.notices(0)) == 0
    # the real recipient's receipt still counts, and is not taken for a double of the forged one
    assert await _post(stack, _finish_xml(msgid, "failed:user block")) == (200, "success")
    assert (await _view(stack, event_id))["finish_status"] == "failed:user block"
    _, binding = await stack.client.call("GET", "/v1/bindings/C300002")
    assert binding["status"] == "blocked"


async def test_the_record_keeps_a_hash_of_the_recipient_not_the_openid(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    event_id = await _delivered(stack, "C300004")
    msgid = (await _view(stack, event_id))["msgid"]
    record = await stack.redis.hgetall(keys.event(0, KEY_ID, event_id))
    assert record["to_hash"] == recipient_hash(msgid, OPENID)
    assert not [value for value in record.values() if OPENID in value]
    assert recipient_hash(msgid, OPENID) != recipient_hash(msgid, OTHER_OPENID)
    assert recipient_hash(msgid, OPENID) != recipient_hash(str(int(msgid) + 1), OPENID)


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
    to_hash = recipient_hash("42", OPENID)
    await redis.hset(live, mapping={"status": "delivered", "msgid": "42", "to_hash": to_hash})
    finished = await scripts.finish_event(
        redis, 0, [live, gone], "success", 1_700_000_000_000, msgid="42", to_hash=to_hash
    )
    assert finished == (1, 1)
    assert await redis.hgetall(live) == {
        "status": "delivered",
        "msgid": "42",
        "to_hash": to_hash,
        "finish_status": "success",
        "finished_ms": "1700000000000",
    }
    assert await redis.exists(gone) == 0


@pytest.mark.parametrize(
    ("msgid", "to_hash"),
    [
        ("42", recipient_hash("42", OTHER_OPENID)),  # our msgid, another user
        ("43", recipient_hash("43", OPENID)),  # the index pointed at records of another msgid
        ("42", ""),  # no recipient at all never matches
    ],
)
async def test_finish_event_script_changes_nothing_for_another_recipient(
    redis: Redis, settings_for: Callable[..., Settings], msgid: str, to_hash: str
) -> None:
    scripts = Scripts(settings_for(callback_urls={"cbs": "http://127.0.0.1:9/cb"}))
    record = keys.event(0, "cbs", "E1")
    to_hash_of_recipient = recipient_hash("42", OPENID)
    await redis.hset(
        record,
        mapping={
            "status": "delivered",
            "src": "cbs",
            "eid": "E1",
            "msgid": "42",
            "to_hash": to_hash_of_recipient,
        },
    )
    finished = await scripts.finish_event(
        redis, 0, [record], "failed:user block", 1_700_000_000_000, msgid=msgid, to_hash=to_hash
    )
    assert finished == (0, 0)
    assert "finish_status" not in await redis.hgetall(record)
    assert await redis.xlen(keys.notices(0)) == 0
