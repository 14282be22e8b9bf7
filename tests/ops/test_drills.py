"""Runbook steps as scripted drills, with the real `pushgw` command: the operator commands beside `pushgw dev`
(its own Redis, never 6379, and the URL it prints), `py-spy dump` on a running process, and `CONFIG REWRITE`
on a Redis started from flags."""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from gateway.core.local_servers import free_port
from tests.support import RedisServer, eventually
from tests.workers.flows import PUSHGW, kill_left, pushgw_env

pytestmark = pytest.mark.e2e
_EXPORT = re.compile(r"export PUSHGW_REDIS_URL=(\S+) PUSHGW_GATEWAY_URL=(\S+)")


async def _pushgw(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        PUSHGW, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    assert "Traceback" not in err.decode(), err.decode()
    return process.returncode, out.decode(), err.decode()


async def _announced(dev: asyncio.subprocess.Process) -> str:
    """`pushgw dev`'s banner, read until its last line."""
    assert dev.stdout is not None
    banner = ""
    while "Ctrl-C stops everything." not in banner:
        line = await asyncio.wait_for(dev.stdout.readline(), timeout=60)
        assert line, f"pushgw dev ended early: {banner}"
        banner += line.decode()
    return banner


async def test_operator_commands_beside_pushgw_dev() -> None:
    """README and runbook: `pushgw dev` prints its Redis URL and the export line; with it, `pushgw epoch
    show`, `dlq list`, `reconcile` and `events show` read that stack (not 127.0.0.1:6379)."""
    port, sim_port = free_port(), free_port()
    base = pushgw_env("redis://unused", PUSHGW_LOG_LEVEL="WARNING")
    base.pop("PUSHGW_REDIS_URL")
    dev = await asyncio.create_subprocess_exec(
        PUSHGW,
        "dev",
        "--port",
        str(port),
        "--sim-port",
        str(sim_port),
        env=base,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        found = _EXPORT.search(await _announced(dev))
        assert found, "pushgw dev printed no export line"
        redis_url, gateway_url = found[1], found[2]
        assert re.fullmatch(r"redis://127\.0\.0\.1:\d+/0", redis_url) and ":6379/" not in redis_url
        assert gateway_url == f"http://127.0.0.1:{port}"
        env = {**base, "PUSHGW_REDIS_URL": redis_url, "PUSHGW_GATEWAY_URL": gateway_url}
        assert (await _pushgw(env, "epoch", "show"))[0] == 0
        demo = {
            "event_id": "CBS-DEMO-0001",
            "customer_id": "C100234",
            "account": "6222020200001234",
            "type": "card_purchase",
            "amount": "1234.56",
            "currency": "CNY",
            "occurred_at": "2026-11-22T10:00:00+08:00",
        }
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{gateway_url}/v1/events", json=demo) as answer:  # open ingress
                assert answer.status == 202

        async def delivered() -> bool:
            status, out, _ = await _pushgw(env, "events", "show", "CBS-DEMO-0001")
            return status == 0 and orjson.loads(out)["status"] == "delivered"

        await eventually(delivered, timeout_s=30, step_s=0.5)
        assert await _pushgw(env, "dlq", "list") == (0, "", "")
        status, out, _ = await _pushgw(env, "reconcile")
        assert (status, orjson.loads(out)["adds_up"]) == (0, True)
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(dev.wait(), timeout=30)
            except TimeoutError:
                await kill_left([dev])


async def test_py_spy_dumps_a_running_pushgw_process(redis: Redis, redis_server: RedisServer) -> None:
    """Runbook, PushgwEventLoopLag: `py-spy dump --pid PID` (py-spy comes with the dev extra)."""
    spy = await asyncio.to_thread(shutil.which, "py-spy") or str(Path(sys.executable).with_name("py-spy"))
    assert await asyncio.to_thread(Path(spy).exists), "py-spy is not installed: it is in the dev extra"
    worker = await asyncio.create_subprocess_exec(
        PUSHGW,
        "worker",
        env=pushgw_env(redis_server.url, PUSHGW_METRICS_PORT="0", PUSHGW_LOG_LEVEL="WARNING"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(0)  # let it start
        status, out = 1, ""
        for _ in range(40):  # until the interpreter is up far enough to be read
            process = await asyncio.create_subprocess_exec(
                spy,
                "dump",
                "--pid",
                str(worker.pid),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            raw, _ = await process.communicate()
            status, out = process.returncode or 0, raw.decode()
            if status == 0 and "_run_worker" in out:
                break
            if "Permission denied" in out or "Operation not permitted" in out:
                pytest.skip("this host does not let py-spy read another process (ptrace); see the runbook")
            await asyncio.sleep(0.25)
        assert status == 0 and "_run_worker" in out, out
    finally:
        await kill_left([worker])


async def test_config_rewrite_fails_on_a_redis_started_from_flags(redis: Redis) -> None:
    """Runbook, PushgwRedisNotDurable: the test Redis, like `pushgw dev`'s, runs from flags only."""
    with pytest.raises(ResponseError, match="without a config file"):
        await redis.config_rewrite()


def test_the_image_and_the_dev_extra_ship_py_spy() -> None:
    root = Path(__file__).resolve().parent.parent.parent
    assert "py-spy" in (root / "Dockerfile").read_text(encoding="utf-8")
    assert '"py-spy' in (root / "pyproject.toml").read_text(encoding="utf-8")
