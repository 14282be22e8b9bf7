"""Running the simulator: config from PUSHGW_SIM_* variables, and serve() until cancelled."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from gateway.core.local_servers import free_port
from tests.wechatsim.conftest import Sim, send_payload
from wechatsim.cli import config_from_env, serve
from wechatsim.config import SimConfig


def test_defaults() -> None:
    config = config_from_env({})
    assert config == SimConfig(apps={"wx_demo_app": "demo_secret"})
    assert (config.token_ttl_s, config.token_overlap_s, config.seed) == (7200, 300, 0)


def test_values_from_the_environment() -> None:
    config = config_from_env(
        {
            "PUSHGW_SIM_APPS": "wx_a:sa, wx_b:s:b",
            "PUSHGW_SIM_TOKEN_TTL_S": "60",
            "PUSHGW_SIM_SEED": "-3",
            "PUSHGW_SIM_MINUTE_QUOTA": "100",
            "PUSHGW_SIM_DAILY_QUOTA": "5",
            "PUSHGW_SIM_DEDUP_WINDOW_S": "30",
            "PUSHGW_SIM_KEEP_MESSAGES": "500",
        }
    )
    assert config.apps == {"wx_a": "sa", "wx_b": "s:b"}
    assert (config.token_ttl_s, config.token_overlap_s, config.seed) == (60, 30, -3)
    assert (config.minute_quota, config.daily_quota, config.dedup_window_s) == (100, 5, 30)
    assert config.keep_messages == 500


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"PUSHGW_SIM_APPS": "wx_a"}, "PUSHGW_SIM_APPS"),
        ({"PUSHGW_SIM_APPS": "wx_a:s,"}, "PUSHGW_SIM_APPS"),
        ({"PUSHGW_SIM_APPS": ":secret"}, "PUSHGW_SIM_APPS"),
        ({"PUSHGW_SIM_APPS": " "}, "PUSHGW_SIM_APPS"),
        ({"PUSHGW_SIM_TOKEN_TTL_S": "soon"}, "PUSHGW_SIM_TOKEN_TTL_S"),
        ({"PUSHGW_SIM_TOKEN_TTL_S": "0"}, "PUSHGW_SIM_TOKEN_TTL_S"),
        ({"PUSHGW_SIM_SEED": "1.5"}, "PUSHGW_SIM_SEED"),
        ({"PUSHGW_SIM_TOKEN_OVERLAP_S": "7200"}, "PUSHGW_SIM_TOKEN_OVERLAP_S"),
        ({"PUSHGW_SIM_DAILY_QUOTA": "-1"}, "PUSHGW_SIM_DAILY_QUOTA"),
        ({"PUSHGW_SIM_KEEP_MESSAGES": "0"}, "PUSHGW_SIM_KEEP_MESSAGES"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], variable: str) -> None:
    with pytest.raises(ValueError, match=variable):
        config_from_env(environ)


def test_a_bad_apps_value_does_not_echo_secrets() -> None:
    with pytest.raises(ValueError) as caught:
        config_from_env({"PUSHGW_SIM_APPS": "wx_a:topsecret,broken"})
    assert "topsecret" not in str(caught.value)


async def _wait_healthy(session: aiohttp.ClientSession, url: str) -> dict[str, str]:
    for _ in range(200):
        try:
            async with session.get(url) as resp:
                body: dict[str, str] = await resp.json()
                return body
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.01)
    raise AssertionError("the simulator never came up")


async def test_serve_runs_until_cancelled_and_releases_the_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()
    task = asyncio.create_task(serve("127.0.0.1", port, SimConfig()))
    url = f"http://127.0.0.1:{port}/healthz"
    async with aiohttp.ClientSession() as session:
        assert await _wait_healthy(session, url) == {"status": "ok"}
        assert not [r for r in caplog.records if r.name == "aiohttp.access"], "request lines carry secrets"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(aiohttp.ClientConnectionError):
            async with session.get(url):
                pass


async def test_logs_never_hold_tokens_or_openids(sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = await sim.token()
    await sim.put_faults({"script": [{"errcode": -1}]})
    await sim.send(token, send_payload())
    await sim.send(token, send_payload())
    await sim.post("/sim/unsubscribe", {"openid": "oSecretUser_77"})
    await sim.post("/sim/reset")
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("wechatsim"))
    assert ours
    assert token not in ours
    assert "oTestUser_0001" not in ours
    assert "oSecretUser_77" not in ours
