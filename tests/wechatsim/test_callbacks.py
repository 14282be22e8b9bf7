"""Delivery-finished events: signed TEMPLATESENDJOBFINISH XML per delivered message, status shares, doubles,
retries (3 tries in all) when the answer is not `success`, all replayable under a seed; with an
EncodingAESKey, safe-mode posts that wechatpy's WeChatCrypto (a third party) verifies and opens."""

from __future__ import annotations

import base64
import hashlib
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from aiohttp import web
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException

from tests.support import Running, eventually
from tests.wechatsim.conftest import APPID, OPENID, MakeSim, Sim, send_payload
from wechatsim.callback import CallbackError, FinishEvent, account_id, finish_xml, parse_callback, signature
from wechatsim.cli import config_from_env

TOKEN = "cb-token"  # noqa: S105 - a fixture callback token
AES_KEY = base64.b64encode(bytes(range(50, 82))).decode()[:43]


class Receiver:
    """A fake bank server: checks the signature, keeps each event, answers from a script then `success`.

    With `aes_key` set it is in safe mode: wechatpy's WeChatCrypto checks msg_signature and opens the body
    (a post it cannot open counts as a bad signature)."""

    def __init__(self, answers: list[str] | None = None) -> None:
        self.answers = list(answers or [])
        self.events: list[dict[str, str]] = []
        self.queries: list[dict[str, str]] = []
        self.envelopes: list[dict[str, str]] = []
        self.bad_signatures = 0
        self.aes_key: str | None = None
        app = web.Application()
        app.router.add_post("/wechat/callback", self.handle)
        self.running = Running(app)

    @property
    def url(self) -> str:
        return self.running.url + "/wechat/callback"

    async def handle(self, request: web.Request) -> web.Response:
        query = request.query
        joined = "".join(sorted([TOKEN, query["timestamp"], query["nonce"]]))
        if hashlib.sha1(joined.encode()).hexdigest() != query["signature"]:  # noqa: S324
            self.bad_signatures += 1
        self.queries.append(dict(query))
        body = await request.read()
        if self.aes_key is not None:
            envelope = ET.fromstring(body)  # noqa: S314 - XML from the simulator under test
            self.envelopes.append({child.tag: child.text or "" for child in envelope})
            crypto = WeChatCrypto(TOKEN, self.aes_key, APPID)
            try:
                body = crypto.decrypt_message(
                    body, query.get("msg_signature", ""), query["timestamp"], query["nonce"]
                ).encode()
            except (InvalidSignatureException, InvalidAppIdException):
                self.bad_signatures += 1
                return web.Response(text="bad")
        root = ET.fromstring(body)  # noqa: S314 - XML from the simulator under test
        self.events.append({child.tag: child.text or "" for child in root})
        return web.Response(text=self.answers.pop(0) if self.answers else "success")


@pytest.fixture
async def receiver() -> Any:
    running = Receiver()
    await running.running.start()
    yield running
    await running.running.stop()


async def _settled(sim: Sim, count: int) -> dict[str, Any]:
    async def done() -> bool:
        callbacks = (await sim.stats())["callbacks"]
        return bool(callbacks["acknowledged"] + callbacks["given_up"] >= count)

    await eventually(done, timeout_s=20)
    stats: dict[str, Any] = (await sim.stats())["callbacks"]
    return stats


async def _send_many(sim: Sim, count: int) -> None:
    token = await sim.token()
    for i in range(count):
        assert (await sim.send(token, send_payload(client_msg_id=f"ev-{i}")))["errcode"] == 0


def _callback(receiver: Receiver, **extra: object) -> dict[str, object]:
    return {"url": receiver.url, "token": TOKEN, "retry_delay_ms": 0, **extra}


def _finished(sim: Any, sent: dict[str, Any]) -> dict[str, str]:
    """The TEMPLATESENDJOBFINISH event the simulator posts for `sent` (WECHAT_API.md s.4)."""
    return {
        "ToUserName": account_id(APPID),
        "FromUserName": OPENID,
        "CreateTime": str(int(sim.clock.now_s)),
        "MsgType": "event",
        "Event": "TEMPLATESENDJOBFINISH",
        "MsgID": str(sent["msgid"]),
        "Status": "success",
    }


async def test_each_delivered_message_gets_one_signed_finish_event(sim: Sim, receiver: Receiver) -> None:
    await sim.put_faults({"callback": _callback(receiver)})
    token = await sim.token()
    sent = await sim.send(token, send_payload())
    await sim.send(token, send_payload())  # a dedup repeat: no second event
    await sim.send(token, send_payload(template_id="nope"))  # not delivered: no event
    stats = await _settled(sim, 1)
    assert stats == {
        "queued": {"success": 1},
        "duplicates": 0,
        "tries": 1,
        "acknowledged": 1,
        "given_up": 0,
        "dropped": 0,
    }
    assert receiver.bad_signatures == 0
    assert receiver.events == [_finished(sim, sent)]
    [logged] = (await sim.get("/sim/callbacks"))[1]["callbacks"]
    assert logged == {
        "msgid": sent["msgid"],
        "touser": OPENID,
        "status": "success",
        "duplicate": False,
        "tries": 1,
        "acknowledged": True,
    }


async def test_status_shares_and_doubles_replay_under_a_seed(make_sim: MakeSim, receiver: Receiver) -> None:
    runs = []
    for _ in range(2):
        receiver.events.clear()
        sim = await make_sim()
        shares = {"user_block_rate": 0.3, "system_failed_rate": 0.2, "duplicate_rate": 0.25}
        await sim.put_faults({"seed": 4, "callback": _callback(receiver, **shares)})
        await _send_many(sim, 40)
        stats = await _settled(sim, 40 + (await sim.stats())["callbacks"]["duplicates"])
        statuses = {e["MsgID"]: e["Status"] for e in receiver.events}
        runs.append((stats["queued"], stats["duplicates"], sorted(statuses.values())))
    assert runs[0] == runs[1]
    queued, duplicates, _ = runs[0]
    assert set(queued) == {"success", "failed:user block", "failed: system failed"}
    assert sum(queued.values()) == 40
    assert 0 < duplicates < 40
    assert len(receiver.events) == 40 + duplicates


async def test_a_refused_event_is_tried_three_times_in_all(sim: Sim, receiver: Receiver) -> None:
    receiver.answers = ["fail", "", "nope", "nope", "nope"]
    await sim.put_faults({"callback": _callback(receiver)})
    await _send_many(sim, 1)
    stats = await _settled(sim, 1)
    assert (stats["tries"], stats["acknowledged"], stats["given_up"]) == (2, 1, 0), "an empty answer is ok"
    await _send_many_more(sim, "second")
    stats = await _settled(sim, 2)
    assert (stats["tries"], stats["acknowledged"], stats["given_up"]) == (5, 1, 1)
    assert [c["tries"] for c in (await sim.get("/sim/callbacks"))[1]["callbacks"]] == [2, 3]


async def _send_many_more(sim: Sim, client_msg_id: str) -> None:
    token = await sim.token()
    assert (await sim.send(token, send_payload(client_msg_id=client_msg_id)))["errcode"] == 0


async def test_an_unreachable_callback_is_given_up_after_three_tries(sim: Sim) -> None:
    await sim.put_faults({"callback": {"url": "http://127.0.0.1:9/nowhere", "retry_delay_ms": 0}})
    await _send_many(sim, 1)
    stats = await _settled(sim, 1)
    assert (stats["tries"], stats["given_up"]) == (3, 1)


async def test_no_callback_configured_posts_nothing(sim: Sim) -> None:
    await _send_many(sim, 2)
    assert (await sim.stats())["callbacks"]["queued"] == {}


def test_callback_from_the_environment() -> None:
    config = config_from_env(
        {"PUSHGW_SIM_CALLBACK_URL": "http://127.0.0.1:8080/wechat/callback", "PUSHGW_SIM_CALLBACK_TOKEN": "t"}
    )
    assert config.callback is not None
    assert (config.callback.url, config.callback.token) == ("http://127.0.0.1:8080/wechat/callback", "t")
    assert "'t'" not in repr(config.callback)
    with pytest.raises(ValueError, match="PUSHGW_SIM_CALLBACK_URL"):
        config_from_env({"PUSHGW_SIM_CALLBACK_URL": "localhost:8080"})


def test_signature_and_xml_shape() -> None:
    assert signature("token", "1700000000", "abc") == hashlib.sha1(b"1700000000abctoken").hexdigest()  # noqa: S324
    config = parse_callback({"url": "http://x/cb"})
    assert config.to_json()["token_set"] is False
    xml = finish_xml(FinishEvent(config, APPID, OPENID, 42, "failed: system failed", 1395658920))
    assert b"<Status><![CDATA[failed: system failed]]></Status>" in xml
    assert b"<MsgID>42</MsgID>" in xml and b"<CreateTime>1395658920</CreateTime>" in xml


async def test_safe_mode_posts_open_with_wechatpy(sim: Sim, receiver: Receiver) -> None:
    receiver.aes_key = AES_KEY
    status, faults = await sim.put_faults({"callback": _callback(receiver, encoding_aes_key=AES_KEY)})
    assert status == 200 and faults["callback"]["safe_mode"] is True
    assert AES_KEY not in str(faults)
    token = await sim.token()
    sent = await sim.send(token, send_payload())
    stats = await _settled(sim, 1)
    assert (stats["tries"], stats["acknowledged"]) == (1, 1)
    assert receiver.bad_signatures == 0
    assert receiver.events == [_finished(sim, sent)]
    [query] = receiver.queries
    assert set(query) == {"signature", "timestamp", "nonce", "encrypt_type", "msg_signature"}
    assert (query["encrypt_type"], query["timestamp"]) == ("aes", str(int(sim.clock.now_s)))
    [envelope] = receiver.envelopes
    assert set(envelope) == {"ToUserName", "Encrypt"} and envelope["ToUserName"] == account_id(APPID)
    assert OPENID not in envelope["Encrypt"]


async def test_a_safe_mode_post_for_another_key_does_not_open(sim: Sim, receiver: Receiver) -> None:
    """The receiver holds another EncodingAESKey: wechatpy cannot open the post, and it is retried."""
    receiver.aes_key = base64.b64encode(bytes(32)).decode()[:43]
    await sim.put_faults({"callback": _callback(receiver, encoding_aes_key=AES_KEY)})
    await _send_many(sim, 1)
    stats = await _settled(sim, 1)
    assert (stats["tries"], stats["given_up"]) == (3, 1)
    assert receiver.events == []


@pytest.mark.parametrize("bad", ["short", AES_KEY[:42] + "!", AES_KEY + "A", 43])
def test_a_bad_encoding_aes_key_is_refused(bad: object) -> None:
    with pytest.raises(CallbackError, match="encoding_aes_key"):
        parse_callback({"url": "http://x/cb", "encoding_aes_key": bad})
    if isinstance(bad, str):
        environ = {"PUSHGW_SIM_CALLBACK_URL": "http://x/cb", "PUSHGW_SIM_ENCODING_AES_KEY": bad}
        with pytest.raises(ValueError, match="PUSHGW_SIM_ENCODING_AES_KEY") as raised:
            config_from_env(environ)
        assert bad not in str(raised.value)


def test_safe_mode_from_the_environment() -> None:
    config = config_from_env(
        {
            "PUSHGW_SIM_CALLBACK_URL": "http://127.0.0.1:8080/wechat/callback",
            "PUSHGW_SIM_CALLBACK_TOKEN": "t",
            "PUSHGW_SIM_ENCODING_AES_KEY": AES_KEY,
        }
    )
    assert config.callback is not None
    assert config.callback.encoding_aes_key == AES_KEY
    assert AES_KEY not in repr(config.callback) and AES_KEY not in repr(config)
    assert config.callback.to_json()["safe_mode"] is True
