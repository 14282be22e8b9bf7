"""Fault modes beyond errcodes: connection resets, slow answers, latency distributions, outage windows, and
faults loaded from a file (PUSHGW_SIM_FAULTS_FILE) that a reset restores."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.wechatsim.conftest import MakeSim, Sim, send_payload
from wechatsim.cli import config_from_env
from wechatsim.faults import FaultConfig, FaultInjector, parse_faults

SEND_PATH = "/cgi-bin/message/template/send"


async def _outcome(sim: Sim, token: str, client_msg_id: str) -> str:
    try:
        status, body = await sim.post_status(
            SEND_PATH, send_payload(client_msg_id=client_msg_id), access_token=token
        )
    except aiohttp.ServerDisconnectedError:
        return "reset"
    return str(body["errcode"]) if status == 200 else f"http_{status}"


@pytest.mark.parametrize(
    ("faults", "fragment"),
    [
        ({"reset_rate": 2}, "reset_rate"),
        ({"slow_rate": -0.1}, "slow_rate"),
        ({"slow_ms": "1"}, "slow_ms"),
        ({"qps": -1}, "qps"),
        ({"latency_dist": {"kind": "zipf"}}, "latency_dist.kind"),
        ({"outage_for_s": -5}, "outage_for_s"),
        ({"outage_for_s": 5, "outage_end_s": 10}, "excludes"),
        ({"script": [{"reset": 1}]}, "script[0].reset"),
        ({"callback": {"url": "ftp://x"}}, "callback.url"),
        ({"callback": {"user_block_rate": 0.7, "system_failed_rate": 0.7}}, "sum to at most 1"),
        ({"callback": {"retries": 5}}, "unknown key 'retries'"),
        ({"callback": {"timeout_s": 100}}, "callback.timeout_s"),
    ],
)
async def test_bad_new_faults_answer_400(sim: Sim, faults: object, fragment: str) -> None:
    status, body = await sim.put_faults(faults)
    assert status == 400
    assert fragment in body["error"]


async def test_a_reset_closes_the_connection_and_delivers_nothing(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"script": [{"reset": True}]})
    assert await _outcome(sim, token, "ev-1") == "reset"
    assert await sim.messages() == []
    assert await _outcome(sim, token, "ev-1") == "0"
    stats = await sim.stats()
    assert stats["errcodes"] == {"reset": 1, "0": 1}
    assert stats["delivered"] == 1


async def test_reset_rate_is_deterministic_under_a_seed(make_sim: MakeSim) -> None:
    runs = []
    for _ in range(2):
        sim = await make_sim()
        token = await sim.token()
        await sim.put_faults({"reset_rate": 0.3, "errcode_rates": {"-1": 0.2}, "seed": 5})
        runs.append([await _outcome(sim, token, f"ev-{i}") for i in range(40)])
    assert runs[0] == runs[1]
    assert {"reset", "-1", "0"} <= set(runs[0])


async def test_a_slow_answer_past_the_client_timeout_was_delivered(sim: Sim) -> None:
    token = await sim.token()
    await sim.put_faults({"slow_rate": 1.0, "slow_ms": 400})
    with pytest.raises(asyncio.TimeoutError):
        async with sim.client.post(
            SEND_PATH,
            params={"access_token": token},
            json=send_payload(),
            timeout=aiohttp.ClientTimeout(total=0.05),
        ) as resp:
            await resp.read()
    assert len(await sim.messages()) == 1


def test_latency_decisions_replay_under_a_seed() -> None:
    config = parse_faults(
        {
            "latency_ms": 1,
            "latency_dist": {"kind": "pareto", "scale_ms": 5, "alpha": 1.2, "max_ms": 2000},
            "slow_rate": 0.1,
            "slow_ms": 3000,
            "seed": 3,
        }
    )
    runs = []
    for _ in range(2):
        injector = FaultInjector(0)
        injector.set(config)
        runs.append([injector.decide().delay_s for _ in range(500)])
    assert runs[0] == runs[1]
    assert min(runs[0]) >= 0.006
    assert max(runs[0]) > 3.0, "some answers are slow"
    assert all(d <= 2.001 + 3.0 for d in runs[0])


async def test_an_outage_window_by_absolute_times(sim: Sim) -> None:
    token = await sim.token()
    start = sim.clock.now_s + 10
    await sim.put_faults({"outage_start_s": start, "outage_end_s": start + 5})
    assert await _outcome(sim, token, "a") == "0"
    sim.clock.advance(10)
    assert await _outcome(sim, token, "b") == "http_503"
    async with sim.client.get("/cgi-bin/token", params={"grant_type": "client_credential"}) as resp:
        assert resp.status == 503
    sim.clock.advance(5)
    assert await _outcome(sim, token, "c") == "0"


async def test_an_outage_for_a_duration_from_now(sim: Sim) -> None:
    token = await sim.token()
    _, body = await sim.put_faults({"outage_for_s": 30})
    assert body["outage_start_s"] == sim.clock.now_s
    assert body["outage_end_s"] == sim.clock.now_s + 30
    assert await _outcome(sim, token, "a") == "http_503"
    sim.clock.advance(30)
    assert await _outcome(sim, token, "b") == "0"
    assert (await sim.stats())["errcodes"] == {"http_5xx": 1, "0": 1}


def test_faults_file_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "faults.json"
    path.write_bytes(orjson.dumps({"errcode_rates": {"-1": 0.5}, "qps": 50, "seed": 9}))
    config = config_from_env({"PUSHGW_SIM_FAULTS_FILE": str(path), "PUSHGW_SIM_QPS": "7"})
    assert config.faults == FaultConfig(errcode_rates={-1: 0.5}, qps=50, seed=9)
    assert config.qps == 7


@pytest.mark.parametrize(("content", "fragment"), [(b"{", "not JSON"), (b'{"latency": 1}', "latency")])
def test_a_bad_faults_file_names_the_variable(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "faults.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="PUSHGW_SIM_FAULTS_FILE") as caught:
        config_from_env({"PUSHGW_SIM_FAULTS_FILE": str(path)})
    assert fragment in str(caught.value)
    with pytest.raises(ValueError, match="PUSHGW_SIM_FAULTS_FILE"):
        config_from_env({"PUSHGW_SIM_FAULTS_FILE": str(tmp_path / "missing.json")})


async def test_file_faults_are_in_force_from_the_start_and_after_a_reset(make_sim: MakeSim) -> None:
    sim = await make_sim(faults=parse_faults({"script": [{"errcode": -1}]}))
    token = await sim.token()
    assert await _outcome(sim, token, "a") == "-1"
    assert await _outcome(sim, token, "a") == "0"
    await sim.post("/sim/reset")
    token = await sim.token()
    assert await _outcome(sim, token, "b") == "-1"
