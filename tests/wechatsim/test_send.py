"""Template sends: WeChat's errcodes in WeChat's order, the success shape, and client_msg_id dedup."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.wechatsim.conftest import (
    DEBIT_TEMPLATE,
    DIGEST_TEMPLATE,
    OPENID,
    Sim,
    debit_data,
    send_payload,
)

SEND_PATH = "/cgi-bin/message/template/send"
RID_RE = re.compile(r" rid: [0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{8}$")


async def test_success_answers_a_large_int_msgid_and_delivers(sim: Sim) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload())
    assert body["errcode"] == 0 and body["errmsg"] == "ok"
    assert isinstance(body["msgid"], int) and 2**61 < body["msgid"] < 2**63
    [message] = await sim.messages(OPENID)
    assert message == {
        "touser": OPENID,
        "template_id": DEBIT_TEMPLATE,
        "client_msg_id": "CBS-20261122-000000001",
        "msgid": body["msgid"],
        "data": debit_data(),
        "url": "https://bank.example/tx/1",
        "received_at": sim.clock.now_s,
    }


async def test_msgids_are_unique(sim: Sim) -> None:
    token = await sim.token()
    msgids = {(await sim.send(token, send_payload(client_msg_id=f"ev-{i}")))["msgid"] for i in range(5)}
    assert len(msgids) == 5


async def test_missing_token_is_41001(sim: Sim) -> None:
    body = await sim.post(SEND_PATH, send_payload())
    assert body["errcode"] == 41001


async def test_unknown_token_is_40001(sim: Sim) -> None:
    body = await sim.send("not-a-token", send_payload())
    assert body["errcode"] == 40001
    assert RID_RE.search(body["errmsg"])


async def test_token_check_comes_before_body_check(sim: Sim) -> None:
    body = await sim.post(SEND_PATH, raw=b"not json", access_token="not-a-token")  # noqa: S106 - a fake token
    assert body["errcode"] == 40001


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[1, 2]", b'{"touser": "oTestUser_0001"}', b'"text"'],
)
async def test_bad_body_is_47001(sim: Sim, raw: bytes) -> None:
    token = await sim.token()
    body = await sim.post(SEND_PATH, raw=raw, access_token=token)
    assert body["errcode"] == 47001
    assert body["errmsg"].startswith("data format error rid: ")


@pytest.mark.parametrize(
    "overrides",
    [
        {"touser": None},
        {"template_id": None},
        {"data": None},
        {"data": "thing1"},
        {"touser": 12345678},
        {"url": 5},
        {"client_msg_id": 7},
    ],
)
async def test_missing_or_mistyped_fields_are_47001(sim: Sim, overrides: dict[str, Any]) -> None:
    token = await sim.token()
    payload = {k: v for k, v in (send_payload() | overrides).items() if v is not None}
    assert (await sim.send(token, payload))["errcode"] == 47001


async def test_unknown_template_is_40037(sim: Sim) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload(template_id="no-such-template", touser="bad"))
    assert body["errcode"] == 40037
    assert body["errmsg"].startswith("invalid template_id rid: ")


@pytest.mark.parametrize("touser", ["short", "has space in it", "o" * 65, "中文openid00", ""])
async def test_invalid_openid_is_40003(sim: Sim, touser: str) -> None:
    token = await sim.token()
    assert (await sim.send(token, send_payload(touser=touser)))["errcode"] == 40003


async def test_unsubscribed_user_is_43004_until_resubscribed(sim: Sim) -> None:
    token = await sim.token()
    assert await sim.post("/sim/unsubscribe", {"openid": OPENID}) == {"status": "ok", "subscribed": False}
    assert (await sim.send(token, send_payload()))["errcode"] == 43004
    assert await sim.messages() == []
    await sim.post("/sim/subscribe", {"openid": OPENID})
    assert (await sim.send(token, send_payload()))["errcode"] == 0


async def test_unknown_data_key_is_47003_naming_it(sim: Sim) -> None:
    token = await sim.token()
    data = debit_data() | {"keyword1": {"value": "x"}}
    body = await sim.send(token, send_payload(data=data))
    assert body["errcode"] == 47003
    assert re.match(r"^argument invalid! data\.keyword1\.value invalid rid: ", body["errmsg"])


async def test_rule_violation_is_47003_naming_the_key(sim: Sim) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload(data=debit_data(phrase3="消费支出扣款")))
    assert body["errcode"] == 47003
    assert body["errmsg"].startswith("argument invalid! data.phrase3.value invalid rid: ")


@pytest.mark.parametrize("entry", ["plain string", {"color": "#173177"}, {"value": 12}])
async def test_malformed_data_entry_is_47003(sim: Sim, entry: object) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload(data=debit_data() | {"thing1": entry}))
    assert body["errcode"] == 47003
    assert "data.thing1.value" in body["errmsg"]


async def test_empty_value_is_47003_is_empty(sim: Sim) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload(data=debit_data(thing6="")))
    assert body["errmsg"].startswith("argument invalid! data.thing6.value is empty rid: ")


async def test_omitted_template_keys_are_allowed(sim: Sim) -> None:
    token = await sim.token()
    data = {k: v for k, v in debit_data().items() if k != "thing6"}
    assert (await sim.send(token, send_payload(data=data)))["errcode"] == 0


async def test_digest_template_accepts_its_keys(sim: Sim) -> None:
    token = await sim.token()
    data = {
        "thing1": {"value": "尾号1234"},
        "time2": {"value": "2026-11-22 10:02"},
        "thing3": {"value": "3笔动账"},
        "amount4": {"value": "¥1,534.56"},
        "amount5": {"value": "¥0.00"},
    }
    assert (await sim.send(token, send_payload(template_id=DIGEST_TEMPLATE, data=data)))["errcode"] == 0
    bad = data | {"thing6": {"value": "x"}}
    assert (await sim.send(token, send_payload(template_id=DIGEST_TEMPLATE, data=bad)))["errcode"] == 47003


async def test_color_and_miniprogram_are_accepted(sim: Sim) -> None:
    token = await sim.token()
    data = debit_data() | {"amount4": {"value": "1,234.56元", "color": "#173177"}}
    payload = send_payload(data=data, miniprogram={"appid": "wx_mini", "pagepath": "pages/tx"})
    assert (await sim.send(token, payload))["errcode"] == 0


async def test_same_client_msg_id_answers_the_first_msgid_and_delivers_once(sim: Sim) -> None:
    token = await sim.token()
    first = await sim.send(token, send_payload())
    sim.clock.advance(599)
    again = await sim.send(token, send_payload())
    assert again == {"errcode": 0, "errmsg": "ok", "msgid": first["msgid"]}
    assert len(await sim.messages(OPENID)) == 1
    stats = await sim.stats()
    assert (stats["delivered"], stats["deduplicated"], stats["errcodes"]) == (1, 1, {"0": 2})


async def test_dedup_window_ends(sim: Sim) -> None:
    token = await sim.token()
    first = await sim.send(token, send_payload())
    sim.clock.advance(600)
    later = await sim.send(token, send_payload())
    assert later["msgid"] != first["msgid"]
    assert len(await sim.messages(OPENID)) == 2


async def test_dedup_is_per_user_and_skipped_without_client_msg_id(sim: Sim) -> None:
    token = await sim.token()
    a = await sim.send(token, send_payload())
    b = await sim.send(token, send_payload(touser="oOtherUser_0002"))
    assert a["msgid"] != b["msgid"]
    c = await sim.send(token, send_payload(client_msg_id=None))
    d = await sim.send(token, send_payload(client_msg_id=None))
    assert c["msgid"] != d["msgid"]
    assert len(await sim.messages()) == 4


async def test_a_rejected_send_does_not_claim_the_dedup_key(sim: Sim) -> None:
    token = await sim.token()
    bad = await sim.send(token, send_payload(data=debit_data(amount4="lots")))
    assert bad["errcode"] == 47003
    good = await sim.send(token, send_payload())
    assert good["errcode"] == 0
    assert [m["msgid"] for m in await sim.messages()] == [good["msgid"]]


async def test_send_stats_count_answers_by_errcode(sim: Sim) -> None:
    token = await sim.token()
    await sim.send(token, send_payload())
    await sim.send("nope", send_payload())
    await sim.send(token, send_payload(template_id="nope"))
    stats = await sim.stats()
    assert stats["calls"]["send"] == 3
    assert stats["calls"]["token"] == 1
    assert stats["errcodes"] == {"0": 1, "40001": 1, "40037": 1}
    assert stats["token_errcodes"] == {"0": 1}
