"""Fault injection: config validation, scripted answers, seeded rates, outage and latency."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from tests.wechatsim.conftest import APPID, SECRET, MakeSim, Sim, send_payload
from wechatsim.faults import FaultConfig, FaultInjector, ScriptStep, parse_faults

SEND_PATH = "/cgi-bin/message/template/send"


async def _outcomes(sim: Sim, token: str, count: int) -> list[str]:
    """The answer of each of `count` sends: the errcode, or the HTTP status of a non-JSON answer."""
    results: list[str] = []
    for _ in range(count):
        status, body = await sim.post_status(SEND_PATH, send_payload(client_msg_id=None), access_token=token)
        results.append(str(body["errcode"]) if status == 200 else f"http_{status}")
    return results


@pytest.mark.parametrize(
    ("faults", "fragment"),
    [
        ([], "JSON object"),
        ({"latency": 5}, "unknown fault key 'latency'"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_ms": "10"}, "latency_ms"),
        ({"latency_jitter_ms": True}, "latency_jitter_ms"),
        ({"errcode_rates": [1]}, "errcode_rates"),
        ({"errcode_rates": {"busy": 0.1}}, "'busy'"),
        ({"errcode_rates": {"0": 0.1}}, "errcode 0"),
        ({"errcode_rates": {"-1": 1.5}}, "errcode_rates[-1]"),
        ({"errcode_rates": {"-1": 0.6}, "http_5xx_rate": 0.6}, "sum to at most 1"),
        ({"http_5xx_rate": 2}, "http_5xx_rate"),
        ({"outage": "yes"}, "outage"),
        ({"script": {"errcode": -1}}, "script must be a list"),
        ({"script": [{}]}, "script[0]"),
        ({"script": [{"errcode": -1}, {"errcode": "x"}]}, "script[1].errcode"),
        ({"script": [{"http_status": 404}]}, "5xx"),
        ({"script": [{"errcode": -1, "http_status": 502}]}, "not both"),
        ({"script": [{"delay_ms": -5}]}, "script[0].delay_ms"),
        ({"script": [{"drop": True}]}, "unknown key 'drop'"),
        ({"seed": 1.5}, "seed"),
        ({"daily_quota": -1}, "daily_quota"),
        ({"minute_quota": "10"}, "minute_quota"),
    ],
)
async def test_bad_faults_answer_400_naming_the_field(sim: Sim, faults: object, fragment: str) -> None:
    status, body = await sim.put_faults(faults)
    assert status == 400
    assert fragment in body["error"]
    assert (await sim.get("/sim/faults"))[1] == FaultConfig().to_json()


async def test_faults_body_that_is_not_json_answers_400(sim: Sim) -> None:
    async with sim.client.put("/sim/faults", data=b"{nope") as resp:
        assert resp.status == 400
        assert await resp.json() == {"error": "body must be JSON"}


async def test_put_replaces_and_get_returns_the_faults(sim: Sim) -> None:
    faults: dict[str, Any] = {
        "latency_ms": 1,
        "latency_jitter_ms": 2,
        "errcode_rates": {"45011": 0.25, "-1": 0.5},
        "http_5xx_rate": 0.25,
        "outage": False,
        "script": [{"errcode": 40001}, {"http_status": 503, "delay_ms": 10}],
        "seed": 3,
        "daily_quota": 10,
        "minute_quota": None,
    }
    status, body = await sim.put_faults(faults)
    assert status == 200
    expected = FaultConfig().to_json() | faults | {"errcode_rates": {"-1": 0.5, "45011": 0.25}}
    assert body == expected
    assert (await sim.get("/sim/faults"))[1] == expected
    await sim.put_faults({"outage": False})
    assert (await sim.get("/sim/faults"))[1] == FaultConfig().to_json()


async def test_script_answers_in_order_then_normal(sim: Sim) -> None:
    token = await sim.token()
    script = [{"errcode": -1}, {"http_status": 502}, {"errcode": 0}, {"errcode": 45011}]
    await sim.put_faults({"script": script})
    assert await _outcomes(sim, token, 5) == ["-1", "http_502", "0", "45011", "0"]
    assert (await sim.get("/sim/faults"))[1]["script"] == []
    stats = await sim.stats()
    assert stats["errcodes"] == {"-1": 1, "http_5xx": 1, "0": 2, "45011": 1}
    assert stats["delivered"] == 2


async def test_script_steps_are_consumed_only_by_valid_sends(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"script": [{"errcode": -1}]})
    assert (await sim.send("bad-token", send_payload()))["errcode"] == 40001
    assert (await sim.get("/sim/faults"))[1]["script"] == [{"errcode": -1}]
    assert (await sim.send(token, send_payload()))["errcode"] == -1


async def test_injected_errcode_does_not_deliver_and_a_retry_does(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"script": [{"errcode": -1}]})
    busy = await sim.send(token, send_payload())
    assert busy["errcode"] == -1 and busy["errmsg"].startswith("system error rid: ")
    retry = await sim.send(token, send_payload())
    assert retry["errcode"] == 0
    assert [m["msgid"] for m in await sim.messages()] == [retry["msgid"]]


async def test_a_slow_answer_is_delivered_before_the_client_gives_up(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"script": [{"delay_ms": 400}]})
    timeout = aiohttp.ClientTimeout(total=0.05)
    with pytest.raises(asyncio.TimeoutError):
        async with sim.client.post(
            SEND_PATH, params={"access_token": token}, json=send_payload(), timeout=timeout
        ) as resp:
            await resp.read()
    [first] = await sim.messages()
    retry = await sim.send(token, send_payload())
    assert retry["msgid"] == first["msgid"]
    assert len(await sim.messages()) == 1


async def test_rates_are_deterministic_under_a_seed(make_sim: MakeSim) -> None:
    faults = {"errcode_rates": {"-1": 0.3, "45011": 0.1}, "http_5xx_rate": 0.2, "seed": 42}
    runs: list[list[str]] = []
    for _ in range(2):
        sim = await make_sim()
        token = await sim.token()
        await sim.put_faults(faults)
        runs.append(await _outcomes(sim, token, 60))
    assert runs[0] == runs[1]
    assert set(runs[0]) == {"0", "-1", "45011", "http_502"}
    other = await make_sim()
    token = await other.token()
    await other.put_faults(faults | {"seed": 43})
    assert await _outcomes(other, token, 60) != runs[0]


async def test_putting_the_faults_again_restarts_the_sequence(make_sim: MakeSim) -> None:
    sim = await make_sim(seed=11)
    token = await sim.token()
    await sim.put_faults({"errcode_rates": {"-1": 0.5}})
    first = await _outcomes(sim, token, 20)
    await sim.put_faults({"errcode_rates": {"-1": 0.5}})
    assert await _outcomes(sim, token, 20) == first
    assert (await sim.get("/sim/faults"))[1]["seed"] is None


def test_injector_rates_match_their_probabilities() -> None:
    injector = FaultInjector(default_seed=5)
    injector.set(parse_faults({"errcode_rates": {"-1": 0.2}, "http_5xx_rate": 0.1}))
    decisions = [injector.decide() for _ in range(10_000)]
    busy = sum(d.errcode == -1 for d in decisions) / len(decisions)
    http = sum(d.http_status == 502 for d in decisions) / len(decisions)
    assert 0.18 < busy < 0.22
    assert 0.08 < http < 0.12


def test_injector_latency_and_jitter() -> None:
    injector = FaultInjector(default_seed=5)
    injector.set(FaultConfig(latency_ms=100, latency_jitter_ms=50, script=(ScriptStep(delay_ms=1000),)))
    assert 1.1 <= injector.decide().delay_s <= 1.15
    delays = [injector.decide().delay_s for _ in range(200)]
    assert all(0.1 <= d <= 0.15 for d in delays)
    assert len(set(delays)) > 100


async def test_latency_slows_every_send(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"latency_ms": 100})
    started = time.monotonic()
    assert (await sim.send(token, send_payload()))["errcode"] == 0
    assert time.monotonic() - started >= 0.1


async def test_outage_answers_503_to_every_wechat_call_but_not_to_sim(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"outage": True})
    status, _ = await sim.post_status(SEND_PATH, send_payload(), access_token=token)
    assert status == 503
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    async with sim.client.get("/cgi-bin/token", params=params) as resp:
        assert resp.status == 503
    status, _ = await sim.post_status("/cgi-bin/stable_token", params)
    assert status == 503
    async with sim.client.get("/cgi-bin/template/get_all_private_template") as resp:
        assert resp.status == 503
    assert await sim.messages() == []
    stats = await sim.stats()
    assert stats["errcodes"] == {"http_5xx": 1}
    assert stats["token_errcodes"] == {"0": 1, "http_5xx": 2}
    assert stats["calls"] == {"token": 2, "stable_token": 1, "send": 1, "templates": 1}
    await sim.put_faults({"outage": False})
    assert (await sim.send(token, send_payload()))["errcode"] == 0


async def test_outage_comes_before_the_token_check(sim: Sim) -> None:
    await sim.put_faults({"outage": True})
    status, _ = await sim.post_status(SEND_PATH, raw=b"nonsense")
    assert status == 503
