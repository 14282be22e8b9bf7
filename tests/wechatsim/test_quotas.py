"""Quotas: 45009 past the daily quota per app per Beijing day, 45011 past the minute quota."""

from __future__ import annotations

from tests.wechatsim.conftest import OTHER_APPID, OTHER_SECRET, MakeSim, Sim, send_payload

BEIJING_OFFSET_S = 8 * 3600


async def _send(sim: Sim, token: str, event: int) -> int:
    errcode: int = (await sim.send(token, send_payload(client_msg_id=f"ev-{event}")))["errcode"]
    return errcode


async def test_daily_quota_answers_45009_until_beijing_midnight(make_sim: MakeSim) -> None:
    sim = await make_sim(daily_quota=3)
    token = await sim.token()
    assert [await _send(sim, token, i) for i in range(4)] == [0, 0, 0, 45009]
    to_midnight_s = 86400 - (sim.clock.now_s + BEIJING_OFFSET_S) % 86400
    sim.clock.advance(to_midnight_s - 1)
    token = await sim.token()
    assert await _send(sim, token, 4) == 45009
    sim.clock.advance(1)
    assert await _send(sim, token, 5) == 0
    assert len(await sim.messages()) == 4
    assert (await sim.stats())["errcodes"] == {"0": 4, "45009": 2}


async def test_daily_quota_is_per_app(make_sim: MakeSim) -> None:
    sim = await make_sim(daily_quota=1)
    token = await sim.token()
    other = await sim.token(OTHER_APPID, OTHER_SECRET)
    assert await _send(sim, token, 1) == 0
    assert await _send(sim, token, 2) == 45009
    assert await _send(sim, other, 3) == 0


async def test_minute_quota_answers_45011_until_the_next_minute(make_sim: MakeSim) -> None:
    sim = await make_sim(minute_quota=2)
    sim.clock.advance(60 - sim.clock.now_s % 60)
    token = await sim.token()
    assert [await _send(sim, token, i) for i in range(3)] == [0, 0, 45011]
    sim.clock.advance(59)
    assert await _send(sim, token, 3) == 45011
    sim.clock.advance(1)
    assert await _send(sim, token, 4) == 0
    body = await sim.send(token, send_payload(client_msg_id="x1"))
    body = await sim.send(token, send_payload(client_msg_id="x2"))
    assert body["errmsg"].startswith("api minute-quota reach limit")


async def test_zero_minute_quota_is_unlimited(sim: Sim) -> None:
    token = await sim.token()
    assert {await _send(sim, token, i) for i in range(30)} == {0}


async def test_a_repeat_counts_against_the_quota(make_sim: MakeSim) -> None:
    sim = await make_sim(daily_quota=1)
    token = await sim.token()
    first = await sim.send(token, send_payload())
    assert first["errcode"] == 0
    assert (await sim.send(token, send_payload()))["errcode"] == 45009


async def test_faults_override_the_quotas_and_reset_restores_them(sim: Sim) -> None:
    await sim.put_faults({"daily_quota": 1})
    token = await sim.token()
    assert [await _send(sim, token, i) for i in range(2)] == [0, 45009]
    await sim.put_faults({"minute_quota": 1})
    sim.clock.advance(60)
    assert [await _send(sim, token, i) for i in range(2, 4)] == [0, 45011]
    await sim.post("/sim/reset")
    token = await sim.token()
    assert {await _send(sim, token, i) for i in range(4, 8)} == {0}
