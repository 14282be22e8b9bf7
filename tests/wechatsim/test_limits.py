"""WeChat's limits: stable_token force_refresh (20 a day, 30 s apart), per-app QPS, 43019 blacklist, 40003
for an openid of another app, and the per-app counts in /sim/stats."""

from __future__ import annotations

from tests.wechatsim.conftest import (
    APPID,
    OPENID,
    OTHER_APPID,
    OTHER_SECRET,
    SECRET,
    MakeSim,
    Sim,
    send_payload,
)

STABLE_PATH = "/cgi-bin/stable_token"
BEIJING_OFFSET_S = 8 * 3600


async def _force(sim: Sim) -> int:
    payload = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET, "force_refresh": True}
    body = await sim.post(STABLE_PATH, payload)
    return 0 if "access_token" in body else int(body["errcode"])


async def _errcode(sim: Sim, token: str, **overrides: object) -> int:
    return int((await sim.send(token, send_payload(**overrides)))["errcode"])


async def test_force_refresh_needs_30_seconds_between(sim: Sim) -> None:
    assert await _force(sim) == 0
    sim.clock.advance(29)
    assert await _force(sim) == 45011
    assert (await sim.stable_token())["access_token"], "a plain stable_token call is not limited"
    sim.clock.advance(1)
    assert await _force(sim) == 0


async def test_force_refresh_at_most_20_a_beijing_day(sim: Sim) -> None:
    sim.clock.advance(86400 - (sim.clock.now_s + BEIJING_OFFSET_S) % 86400)  # Beijing midnight
    answers = []
    for _ in range(21):
        answers.append(await _force(sim))
        sim.clock.advance(30)
    assert answers == [0] * 20 + [45009]
    sim.clock.advance(86400 - (sim.clock.now_s + BEIJING_OFFSET_S) % 86400)
    assert await _force(sim) == 0
    assert (await sim.stats())["token_errcodes"]["45009"] == 1


async def test_qps_answers_45011_past_the_limit_within_one_second(make_sim: MakeSim) -> None:
    sim = await make_sim(qps=3)
    sim.clock.advance(1 - sim.clock.now_s % 1)
    token = await sim.token()
    other = await sim.token(OTHER_APPID, OTHER_SECRET)
    codes = [await _errcode(sim, token, client_msg_id=f"q{i}") for i in range(4)]
    assert codes == [0, 0, 0, 45011]
    assert await _errcode(sim, other, client_msg_id="other") == 0, "the limit is per app"
    sim.clock.advance(1)
    assert await _errcode(sim, token, client_msg_id="q9") == 0


async def test_qps_can_be_set_at_run_time(sim: Sim) -> None:
    token = await sim.token()
    status, body = await sim.put_faults({"qps": 1})
    assert status == 200 and body["qps"] == 1
    assert [await _errcode(sim, token, client_msg_id=f"r{i}") for i in range(2)] == [0, 45011]


async def test_a_blacklisted_user_answers_43019_until_unblocked(sim: Sim) -> None:
    token = await sim.token()
    assert (await sim.post("/sim/block", {"openid": OPENID}))["blocked"] is True
    body = await sim.send(token, send_payload())
    assert body["errcode"] == 43019 and body["errmsg"].startswith("require remove blacklist rid: ")
    await sim.post("/sim/unblock", {"openid": OPENID})
    assert await _errcode(sim, token) == 0


async def test_an_openid_of_another_app_answers_40003(sim: Sim) -> None:
    token = await sim.token()
    other = await sim.token(OTHER_APPID, OTHER_SECRET)
    await sim.post("/sim/openids", {"openid": OPENID, "appid": OTHER_APPID})
    assert await _errcode(sim, token) == 40003
    assert await _errcode(sim, other) == 0
    assert await _errcode(sim, token, touser="oSomeoneElse_01") == 0, "an unregistered openid follows all"
    await sim.post("/sim/reset")
    token = await sim.token()
    assert await _errcode(sim, token) == 0, "reset forgets the registrations"


async def test_registering_an_openid_needs_a_known_app(sim: Sim) -> None:
    status, body = await sim.post_status("/sim/openids", {"openid": OPENID, "appid": "wx_nobody"})
    assert status == 400 and "appid" in body["error"]
    status, body = await sim.post_status("/sim/block", {"openid": ""})
    assert status == 400 and "openid" in body["error"]


async def test_stats_count_per_app(sim: Sim) -> None:
    token = await sim.token()
    other = await sim.token(OTHER_APPID, OTHER_SECRET)
    await sim.send(token, send_payload(client_msg_id="a"))
    await sim.send(token, send_payload(client_msg_id="a"))
    await sim.send(token, send_payload(template_id="nope"))
    await sim.send(other, send_payload(client_msg_id="b"))
    await sim.send("bad-token", send_payload())
    apps = (await sim.stats())["apps"]
    assert apps == {
        APPID: {"sends": 3, "delivered": 1, "deduplicated": 1, "errcodes": {"0": 2, "40037": 1}},
        OTHER_APPID: {"sends": 1, "delivered": 1, "deduplicated": 0, "errcodes": {"0": 1}},
    }
