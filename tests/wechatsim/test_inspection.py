"""The inspection API: messages per openid, stats, reset, health, metrics, and 400s for bad input."""

from __future__ import annotations

import pytest

from tests.wechatsim.conftest import APPID, OPENID, MakeSim, Sim, send_payload

OTHER_OPENID = "oOtherUser_0002"


async def test_messages_filter_by_touser_in_arrival_order(sim: Sim) -> None:
    token = await sim.token()
    sent = [
        await sim.send(token, send_payload(client_msg_id="a")),
        await sim.send(token, send_payload(touser=OTHER_OPENID, client_msg_id="b")),
        await sim.send(token, send_payload(client_msg_id="c")),
        await sim.send(token, send_payload(client_msg_id="a")),
    ]
    mine = await sim.messages(OPENID)
    assert [m["client_msg_id"] for m in mine] == ["a", "c"]
    assert [m["msgid"] for m in mine] == [sent[0]["msgid"], sent[2]["msgid"]]
    assert [m["client_msg_id"] for m in await sim.messages()] == ["a", "b", "c"]
    assert await sim.messages("oNobodyHere_99") == []


async def test_messages_keep_only_the_latest_while_stats_count_them_all(make_sim: MakeSim) -> None:
    sim = await make_sim(keep_messages=3)
    token = await sim.token()
    for index in range(5):
        assert (await sim.send(token, send_payload(client_msg_id=f"m{index}")))["errcode"] == 0
    assert [m["client_msg_id"] for m in await sim.messages()] == ["m2", "m3", "m4"]
    assert (await sim.stats())["delivered"] == 5


async def test_stats_start_at_zero(sim: Sim) -> None:
    assert await sim.stats() == {
        "calls": {"token": 0, "stable_token": 0, "send": 0, "templates": 0},
        "delivered": 0,
        "deduplicated": 0,
        "errcodes": {},
        "token_errcodes": {},
        "apps": {},
        "callbacks": {
            "queued": {},
            "duplicates": 0,
            "tries": 0,
            "acknowledged": 0,
            "given_up": 0,
            "dropped": 0,
        },
    }


async def test_reset_clears_everything_but_apps_and_templates(sim: Sim) -> None:
    token = await sim.token()
    await sim.send(token, send_payload())
    await sim.post("/sim/unsubscribe", {"openid": OTHER_OPENID})
    await sim.put_faults({"latency_ms": 5, "script": [{"errcode": -1}]})
    assert await sim.post("/sim/reset") == {"status": "ok"}
    assert await sim.messages() == []
    assert (await sim.stats())["calls"]["send"] == 0
    assert (await sim.get("/sim/faults"))[1]["script"] == []
    assert (await sim.send(token, send_payload()))["errcode"] == 40001
    token = await sim.token()
    assert (await sim.send(token, send_payload(touser=OTHER_OPENID)))["errcode"] == 0
    again = await sim.send(token, send_payload())
    assert again["errcode"] == 0
    assert len(await sim.messages()) == 2
    _, listed = await sim.get("/cgi-bin/template/get_all_private_template", access_token=token)
    assert len(listed["template_list"]) == 6


async def test_healthz(sim: Sim) -> None:
    assert await sim.get("/healthz") == (200, {"status": "ok"})


async def test_metrics_expose_the_stats(sim: Sim) -> None:
    token = await sim.token()
    await sim.send(token, send_payload())
    await sim.send(token, send_payload())
    async with sim.client.get("/metrics") as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        text = await resp.text()
    assert 'pushgw_sim_calls_total{endpoint="send"} 2.0' in text
    assert 'pushgw_sim_send_answers_total{errcode="0"} 2.0' in text
    assert "pushgw_sim_delivered_total 1.0" in text
    assert "pushgw_sim_deduplicated_total 1.0" in text


@pytest.mark.parametrize(
    ("path", "raw", "fragment"),
    [
        ("/sim/unsubscribe", b"{", "JSON"),
        ("/sim/unsubscribe", b"[]", "JSON object"),
        ("/sim/unsubscribe", b"{}", "openid"),
        ("/sim/unsubscribe", b'{"openid": 5}', "openid"),
        ("/sim/subscribe", b'{"openid": ""}', "openid"),
        ("/sim/tokens/expire", b'{"appid": "wx_nobody"}', "appid"),
        ("/sim/tokens/expire", b"null", "JSON object"),
    ],
)
async def test_bad_sim_input_answers_400(sim: Sim, path: str, raw: bytes, fragment: str) -> None:
    status, body = await sim.post_status(path, raw=raw)
    assert status == 400
    assert fragment in body["error"]


async def test_empty_touser_filter_answers_400(sim: Sim) -> None:
    status, body = await sim.get("/sim/messages", touser="")
    assert status == 400
    assert "touser" in body["error"]


async def test_expire_tokens_of_an_app_without_tokens(sim: Sim) -> None:
    assert await sim.post("/sim/tokens/expire", {"appid": APPID}) == {"status": "ok", "expired": 0}
