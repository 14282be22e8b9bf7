"""`pushgw bench`: start what it needs, measure ingress and delivery beside their baselines, print a table.

Every figure that matters is a ratio against a baseline measured in the same run on the same cores:
  H  bare aiohttp hello-world, requests/s       -> single-event and batch ingress are read against it
  C  bare aiohttp client sending template messages to the simulator -> worker delivery is read against it
The load generator runs in its own process; each server is its own process (this machine has 2 cores).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.redis import server_binary, server_command
from loadtest.payloads import customer_id, openid_of

KEY_ID, SECRET = "bench", "bench-secret"
APPID, APP_SECRET = "wx_bench_app", "bench_app_secret"
CUSTOMERS = 1000


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def _process(args: Sequence[str], env: dict[str, str], ready_url: str) -> AsyncIterator[None]:
    """A server process, ready once `ready_url` answers; stopped (SIGTERM) on exit."""
    process = subprocess.Popen(list(args), env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(ready_url) as response:
                        if response.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def _redis(directory: Path) -> AsyncIterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        server_command(server_binary(), port, directory),
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        for _ in range(200):
            try:
                await client.ping()
                break
            except Exception:  # not up yet
                await asyncio.sleep(0.05)
        await client.aclose()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _load(url: str, mode: str, seconds: float, connections: int = 64, **extra: str) -> dict[str, Any]:
    """Run the load generator process and return its tally."""
    args = [
        sys.executable,
        "-m",
        "loadtest.loadgen",
        "--url",
        url,
        "--mode",
        mode,
        "--seconds",
        str(seconds),
        "--connections",
        str(connections),
        "--key-id",
        KEY_ID,
        "--secret",
        SECRET,
        "--customers",
        str(CUSTOMERS),
    ]
    for name, value in extra.items():
        args += [f"--{name.replace('_', '-')}", value]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    tally: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return tally


def _rate(tally: dict[str, Any]) -> float:
    return float(tally["events"]) / float(tally["seconds"])


@dataclass
class Stack:
    redis_url: str
    sim_url: str
    gateway_url: str
    env: dict[str, str]


def _gateway_env(redis_url: str, sim_url: str) -> dict[str, str]:
    return {
        "PUSHGW_REDIS_URL": redis_url,
        "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
        "PUSHGW_RATE_LIMIT": "1000000/60",
        "PUSHGW_WECHAT_BASE_URL": sim_url,
        "PUSHGW_WECHAT_APPID": APPID,
        "PUSHGW_WECHAT_SECRET": APP_SECRET,
        "PUSHGW_LOG_LEVEL": "WARNING",
        "PUSHGW_METRICS_PORT": "0",
        "PUSHGW_SIM_APPS": f"{APPID}:{APP_SECRET}",
        "PUSHGW_SIM_DAILY_QUOTA": "100000000",
    }


async def _measure_ingress(
    pushgw: list[str], env: dict[str, str], seconds: float, coalesce: bool, mode: str
) -> float:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PUSHGW_INGEST_COALESCE": "true" if coalesce else "false"}
    async with _process([*pushgw, "gateway", "--port", str(port)], env, url + "/healthz"):
        _load(url, mode, 1.0)  # warm up
        return _rate(_load(url, mode, seconds))


async def _measure_hello(seconds: float) -> float:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    async with _process([sys.executable, "-m", "loadtest.hello", "--port", str(port)], {}, url + "/"):
        _load(url, "single", 1.0)
        return _rate(_load(url, "single", seconds))


async def _sim_token(sim_url: str) -> str:
    body = {"grant_type": "client_credential", "appid": APPID, "secret": APP_SECRET, "force_refresh": False}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim_url}/cgi-bin/stable_token", json=body) as r,
    ):
        return str((await r.json())["access_token"])


async def _sim_delivered(session: aiohttp.ClientSession, sim_url: str) -> int:
    async with session.get(f"{sim_url}/sim/stats") as response:
        return int((await response.json())["delivered"])


async def _measure_delivery(
    pushgw: list[str], env: dict[str, str], sim_url: str, redis_url: str, seconds: float
) -> float:
    """Events/s a worker delivers from a backlog (the stream filled by the ingress runs)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    backlog = int(await redis.xlen(keys.stream(0)))
    await redis.aclose()
    async with aiohttp.ClientSession() as session:
        before = await _sim_delivered(session, sim_url)
        async with _process([*pushgw, "worker"], env, sim_url + "/healthz"):
            await asyncio.sleep(1.0)  # start-up and token fetch are not throughput
            start_count, started = await _sim_delivered(session, sim_url), time.monotonic()
            await asyncio.sleep(seconds)
            done = await _sim_delivered(session, sim_url)
            elapsed = time.monotonic() - started
    if done - before >= backlog:
        sys.stderr.write("warning: the backlog ran out during the delivery measurement\n")
    return (done - start_count) / elapsed


async def _bind_customers(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(CUSTOMERS):
            pipe.hset(
                keys.binding(customer_id(index)), mapping={"openid": openid_of(index), "status": "active"}
            )
        await pipe.execute()
    await redis.aclose()


async def run_bench(quick: bool = False, json_path: str | None = None) -> dict[str, Any]:
    seconds = 3.0 if quick else 8.0
    rounds = 1 if quick else 3
    pushgw = [sys.executable, "-c", "from gateway.cli import main; main()"]
    results: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with tempfile.TemporaryDirectory(prefix="pushgw-bench-") as tmp:
        async with _redis(Path(tmp)) as redis_url:
            await _bind_customers(redis_url)
            sim_port = _free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            env = _gateway_env(redis_url, sim_url)
            async with _process([*pushgw, "sim", "--port", str(sim_port)], env, sim_url + "/healthz"):
                token = await _sim_token(sim_url)
                for _ in range(rounds):  # A/B rounds: baseline and product alternate on the same cores
                    add("H", await _measure_hello(seconds))
                    add("single", await _measure_ingress(pushgw, env, seconds, True, "single"))
                    add("single_uncoalesced", await _measure_ingress(pushgw, env, seconds, False, "single"))
                    add("batch", await _measure_ingress(pushgw, env, seconds, True, "batch"))
                    add("C", _rate(_load(sim_url, "template", seconds, token=token)))
                    add("delivery", await _measure_delivery(pushgw, env, sim_url, redis_url, seconds))
    return _report(results, json_path, quick)


def _report(results: dict[str, list[float]], json_path: str | None, quick: bool) -> dict[str, Any]:
    median = {name: statistics.median(values) for name, values in results.items()}
    rows = [
        ("H: bare aiohttp hello-world", "req/s", median["H"], None),
        ("single-event ingress (coalesced)", "events/s", median["single"], median["single"] / median["H"]),
        (
            "single-event ingress, 1 round trip/req",
            "events/s",
            median["single_uncoalesced"],
            median["single_uncoalesced"] / median["H"],
        ),
        ("coalesced / uncoalesced (x100)", "ratio", 100 * median["single"] / median["single_uncoalesced"], None),
        ("batch ingress (100/request)", "events/s", median["batch"], median["batch"] / median["H"]),
        ("C: bare client -> simulator", "msg/s", median["C"], None),
        ("worker delivery", "events/s", median["delivery"], median["delivery"] / median["C"]),
    ]
    lines = [
        f"pushgw bench ({'quick' if quick else 'full'}; medians of {len(results['H'])} rounds; "
        f"{os.cpu_count()} cores; Redis appendfsync always)",
        f"{'measure':<42}{'value':>12}  {'unit':<9}{'ratio':>8}  ratio of",
    ]
    for name, unit, value, ratio in rows:
        base = "" if ratio is None else ("C" if "delivery" in name else "H")
        shown = "" if ratio is None else f"{ratio:8.2f}"
        lines.append(f"{name:<42}{value:>12,.0f}  {unit:<9}{shown:>8}  {base}")
    sys.stdout.write("\n".join(lines) + "\n")
    report = {"medians": median, "rounds": results}
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
