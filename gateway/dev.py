"""`pushgw dev`: a private redis-server, the simulator, the gateway and a worker, in one command.

The ingress runs open (no signatures) and says so loudly. Its Redis keeps the production promises
(AOF with appendfsync always, noeviction) in a temporary directory that is removed on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
from aiohttp import web

from gateway.app import LISTEN_BACKLOG, create_app
from gateway.core.redis import server_binary, server_command
from gateway.core.settings import Settings
from workers.worker import run_worker, stop_on_signals

log = logging.getLogger(__name__)
DEMO_APPID = "wx_demo_app"
DEMO_SECRET = "demo_secret"  # noqa: S105 - the simulator's built-in demo account, not a real secret
DEMO_CUSTOMER = "C100234"
DEMO_OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def redis_server(port: int, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server with AOF and appendfsync always (what the promises need), stopped on exit."""
    process = subprocess.Popen(
        server_command(server_binary(), port, directory),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches us, not Redis: it must outlive the worker's drain
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.asynccontextmanager
async def _site(app: web.Application, host: str, port: int) -> AsyncIterator[None]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=LISTEN_BACKLOG).start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _wait_for_redis(port: int) -> None:
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def _demo_curl(url: str) -> str:
    body = (
        '{"event_id": "CBS-DEMO-0001", "customer_id": "C100234", "account": "6222020200001234", '
        '"type": "card_purchase", "amount": "1234.56", "currency": "CNY", "balance": "5678.90", '
        '"occurred_at": "2026-11-22T10:00:00+08:00", "counterparty": "Starbucks Shanghai", "channel": "POS"}'
    )
    return f"curl -s -X POST {url}/v1/events -H 'Content-Type: application/json' -d '{body}'"


async def run_dev(host: str, port: int, sim_port: int) -> None:
    from wechatsim.app import create_app as create_sim
    from wechatsim.cli import config_from_env

    redis_port = free_port()
    with tempfile.TemporaryDirectory(prefix="pushgw-dev-") as tmp, redis_server(redis_port, Path(tmp)):
        await _wait_for_redis(redis_port)
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            open_ingress=True,
            wechat_base_url=f"http://127.0.0.1:{sim_port}",
            wechat_appid=DEMO_APPID,
            wechat_secret=DEMO_SECRET,
            metrics_port=0,
        )
        sim_config = config_from_env({"PUSHGW_SIM_APPS": f"{DEMO_APPID}:{DEMO_SECRET}"})
        url = f"http://{host}:{port}"
        stopping = asyncio.Event()
        stop_on_signals(stopping, settings.shutdown_timeout_s)
        async with (
            _site(create_sim(sim_config), "127.0.0.1", sim_port),
            _site(create_app(settings), host, port),
        ):
            await _seed_binding(url)
            _announce(url, sim_port)
            await run_worker(settings, stopping)


async def _seed_binding(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await session.put(f"{url}/v1/bindings/{DEMO_CUSTOMER}", json={"openid": DEMO_OPENID})


def _announce(url: str, sim_port: int) -> None:
    lines = [
        "",
        f"pushgw dev is running: ingress {url}  (WeChat simulator http://127.0.0.1:{sim_port})",
        "WARNING: ingress is OPEN (no signatures) - for development only",
        f"demo binding: customer {DEMO_CUSTOMER} -> a simulated WeChat follower",
        "send a demo account-change event:",
        f"  {_demo_curl(url)}",
        "see it delivered:",
        f"  curl -s {url}/v1/events/CBS-DEMO-0001",
        f"  curl -s 'http://127.0.0.1:{sim_port}/sim/messages?touser={DEMO_OPENID}'",
        "Ctrl-C stops everything.",
        "",
    ]
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()
