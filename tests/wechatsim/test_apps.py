"""Several official accounts in one simulator: each app's own templates and its own faults (issue 8)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from tests.wechatsim.conftest import (
    APPID,
    DEBIT_TEMPLATE,
    OTHER_APPID,
    OTHER_SECRET,
    SECRET,
    MakeSim,
    Sim,
    send_payload,
)
from wechatsim.catalog import load_templates

OTHER_DEBIT = "Zz9" + DEBIT_TEMPLATE[3:]


def _other_templates() -> list[dict[str, str]]:
    """The shipped debit template as the other app registered it: same content, its own id."""
    return [load_templates()[DEBIT_TEMPLATE].to_json() | {"template_id": OTHER_DEBIT}]


async def _list(sim: Sim, token: str) -> set[str]:
    status, body = await sim.get("/cgi-bin/template/get_all_private_template", access_token=token)
    assert status == 200, body
    return {template["template_id"] for template in body["template_list"]}


async def test_template_ids_belong_to_one_app(sim: Sim) -> None:
    answer = await sim.post("/sim/templates", {"appid": OTHER_APPID, "templates": _other_templates()})
    assert answer == {"status": "ok", "appid": OTHER_APPID, "templates": 1}
    token, other = await sim.token(), await sim.token(OTHER_APPID, OTHER_SECRET)
    assert DEBIT_TEMPLATE in await _list(sim, token)
    assert await _list(sim, other) == {OTHER_DEBIT}

    assert (await sim.send(other, send_payload()))["errcode"] == 40037  # the first app's id
    assert (await sim.send(token, send_payload(template_id=OTHER_DEBIT)))["errcode"] == 40037
    assert (await sim.send(other, send_payload(template_id=OTHER_DEBIT, client_msg_id="ev-2")))[
        "errcode"
    ] == 0
    assert (await sim.send(token, send_payload()))["errcode"] == 0

    mine = (await sim.get("/sim/messages", appid=APPID))[1]["messages"]
    theirs = (await sim.get("/sim/messages", appid=OTHER_APPID))[1]["messages"]
    assert [m["template_id"] for m in mine] == [DEBIT_TEMPLATE]
    assert [m["template_id"] for m in theirs] == [OTHER_DEBIT]
    await sim.post("/sim/reset")
    assert await _list(sim, await sim.token(OTHER_APPID, OTHER_SECRET)) == {OTHER_DEBIT}, "reset keeps them"


async def test_templates_per_app_from_the_config(make_sim: MakeSim) -> None:
    other = load_templates()[DEBIT_TEMPLATE]
    sim = await make_sim(templates={OTHER_APPID: (dataclasses.replace(other, template_id=OTHER_DEBIT),)})
    assert await _list(sim, await sim.token(OTHER_APPID, OTHER_SECRET)) == {OTHER_DEBIT}
    with pytest.raises(ValueError, match="wx_nobody"):
        await make_sim(templates={"wx_nobody": ()})


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"appid": "wx_nobody", "templates": _other_templates()}, "appid"),
        ({"appid": OTHER_APPID, "templates": []}, "templates"),
        ({"appid": OTHER_APPID, "templates": [{"template_id": "x"}]}, "template"),
    ],
)
async def test_bad_template_registrations_are_refused(
    sim: Sim, payload: dict[str, Any], complaint: str
) -> None:
    status, body = await sim.post_status("/sim/templates", payload)
    assert status == 400 and complaint in body["error"]


async def _token_status(sim: Sim, appid: str, secret: str) -> int:
    params = {"grant_type": "client_credential", "appid": appid, "secret": secret}
    async with sim.client.get("/cgi-bin/token", params=params) as resp:
        return resp.status


async def test_one_apps_outage_and_quota_leave_the_other_app_alone(sim: Sim) -> None:
    token, other = await sim.token(), await sim.token(OTHER_APPID, OTHER_SECRET)
    async with sim.client.put("/sim/faults", params={"appid": OTHER_APPID}, json={"outage": True}) as resp:
        assert resp.status == 200 and (await resp.json())["outage"] is True
    assert (await sim.get("/sim/faults"))[1]["outage"] is False
    assert (await sim.get("/sim/faults", appid=OTHER_APPID))[1]["outage"] is True

    async with sim.client.post(
        "/cgi-bin/message/template/send", params={"access_token": other}, json=send_payload()
    ) as resp:
        assert resp.status == 503
    stable = {"grant_type": "client_credential", "appid": OTHER_APPID, "secret": OTHER_SECRET}
    async with sim.client.post("/cgi-bin/stable_token", json=stable) as resp:
        assert resp.status == 503
    assert await _token_status(sim, OTHER_APPID, OTHER_SECRET) == 503
    assert await _token_status(sim, APPID, SECRET) == 200
    assert (await sim.send(token, send_payload()))["errcode"] == 0

    async with sim.client.put("/sim/faults", params={"appid": OTHER_APPID}, json={"daily_quota": 0}) as resp:
        assert resp.status == 200
    assert (await sim.send(other, send_payload(client_msg_id="ev-q")))["errcode"] == 45009
    assert (await sim.send(token, send_payload(client_msg_id="ev-ok")))["errcode"] == 0

    await sim.post("/sim/reset")
    other = await sim.token(OTHER_APPID, OTHER_SECRET)
    assert (await sim.send(other, send_payload(client_msg_id="ev-after")))["errcode"] == 0, "reset clears it"


async def test_faults_for_an_unknown_app_are_refused(sim: Sim) -> None:
    async with sim.client.put("/sim/faults", params={"appid": "wx_nobody"}, json={"outage": True}) as resp:
        assert resp.status == 400 and "appid" in (await resp.json())["error"]
    status, body = await sim.get("/sim/faults", appid="wx_nobody")
    assert status == 400 and "appid" in body["error"]
