"""Test support: a real redis-server on a free port, running apps on loopback, signed requests, polling."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from redis import Redis as SyncRedis

from gateway.app import create_app
from gateway.core import keys, signing
from gateway.core.local_servers import embedded_server_binary, free_port, server_command
from gateway.core.redis import Epoch
from gateway.core.settings import Settings
from gateway.transport import GatewayRunner
from workers.render import client_msg_id

KEY_ID = "cbs"
SECRET = "test-ingress-secret"  # noqa: S105 - a fixture key
APPID = "wx_test_app"
APP_SECRET = "test_app_secret"  # noqa: S105 - a fixture app secret


def server_binary_for_tests() -> str:
    """PUSHGW_TEST_REDIS=valkey picks the embedded valkey-server; otherwise redis-server from PATH, else
    the embedded one (so the suite runs on a bare machine too)."""
    if os.environ.get("PUSHGW_TEST_REDIS") == "valkey":
        return embedded_server_binary()
    return shutil.which("redis-server") or embedded_server_binary()


class RedisServer:
    """A redis-server process with AOF (appendfsync always) that tests may kill, pause and restart."""

    def __init__(self, directory: Path) -> None:
        self.binary = server_binary_for_tests()
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [*server_command(self.binary, self.port, self.directory), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.binary} did not start on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        else:
            self.process.terminate()
        self.process.wait(timeout=10)
        self.process = None

    def fresh(self) -> None:
        """Empty it (started first if a test stopped it) and initialise its data epoch, as `pushgw epoch
        init` does for a new deployment: for tests that run `pushgw` processes without the `redis` fixture."""
        if self.process is None or self.process.poll() is not None:
            self.start()
        with SyncRedis.from_url(self.url) as client:
            client.flushall()
            client.hset(keys.EPOCH, mapping=Epoch.new("init").fields())


class Running:
    """An aiohttp app served on a free loopback port. Stopping waits at most SHUTDOWN_WAIT_S for requests
    still in progress (aiohttp's default is 60 s): a test's server has no client left to finish for."""

    SHUTDOWN_WAIT_S = 10.0

    def __init__(self, app: web.Application, runner: web.AppRunner | None = None) -> None:
        self.app = app
        self.port = free_port()
        self.runner = runner or web.AppRunner(app, access_log=None, shutdown_timeout=self.SHUTDOWN_WAIT_S)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Running:
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()


def gateway_serving(settings: Settings) -> Running:
    """The gateway app of `settings` served as `pushgw gateway` serves it: its connections guarded by
    gateway/transport.py (header, body and idle deadlines, the connection cap, the error shape)."""
    app = create_app(settings)
    return Running(app, GatewayRunner(app, settings))


def signed_headers(
    body: bytes,
    *,
    method: str = "POST",
    target: str = "/v1/events",
    key_id: str = KEY_ID,
    secret: str = SECRET,
    at_s: int | None = None,
) -> dict[str, str]:
    """JSON request headers signed for `method` and `target` (path and query), created at `at_s`."""
    return {
        "Content-Type": "application/json",
        **signing.signed_headers(key_id, secret, method, target, body, created_s=at_s),
    }


class Client:
    """Signed JSON calls to a gateway: each returns (status, decoded body or None)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url

    async def call(
        self,
        method: str,
        path: str,
        data: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        body = raw if raw is not None else (b"" if data is None else orjson.dumps(data))
        sent = signed_headers(body, method=method, target=path) if headers is None else headers
        async with self.session.request(method, self.url + path, data=body, headers=sent) as response:
            payload = await response.read()
            return response.status, orjson.loads(payload) if payload else None

    async def post_event(self, event: dict[str, Any]) -> tuple[int, Any]:
        return await self.call("POST", "/v1/events", event)

    async def bind(self, customer_id: str, openid: str) -> None:
        status, _ = await self.call("PUT", f"/v1/bindings/{customer_id}", {"openid": openid})
        assert status == 200


_sequence = iter(range(10**9))


def sent_as(event: dict[str, Any], source: str = KEY_ID) -> str:
    """The client_msg_id an event of `source` reaches WeChat with (`workers.render.client_msg_id`)."""
    return client_msg_id(source, event["event_id"])


def make_event(**overrides: Any) -> dict[str, Any]:
    """A valid event with a fresh id; `overrides` replace fields (None removes one)."""
    event: dict[str, Any] = {
        "event_id": f"CBS-20261122-{next(_sequence):09d}",
        "customer_id": "C100234",
        "account": "6222020200001234",
        "type": "card_purchase",
        "amount": "1234.56",
        "currency": "CNY",
        "balance": "5678.90",
        "occurred_at": "2026-11-22T10:00:00+08:00",
        "counterparty": "Starbucks Shanghai",
        "channel": "POS",
    }
    for name, value in overrides.items():
        if value is None:
            event.pop(name, None)
        else:
            event[name] = value
    return event


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, step_s: float = 0.05
) -> None:
    """Poll `check` until it is true; fail with the test's own timeout in mind (no fixed sleeps)."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step_s)


def stack_settings(redis_url: str, /, **overrides: Any) -> Settings:
    """Settings of a test stack on `redis_url`: the fixture keys, fast retries and reclaims, no metrics
    port; keyword arguments override fields."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "api_keys": {KEY_ID: SECRET},
        "wechat_appid": APPID,
        "wechat_secret": APP_SECRET,
        "metrics_port": 0,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.2,
        "reclaim_idle_s": 2,
        "shutdown_timeout_s": 5.0,
        "redis_timeout_s": 1.0,
    }
    values.update(overrides)
    return Settings(**values)


async def answers_ok(session: aiohttp.ClientSession, url: str) -> bool:
    """Whether GET `url` answers 200 (False while nothing there answers)."""
    try:
        async with session.get(url) as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def until_ready(session: aiohttp.ClientSession, process: subprocess.Popen[bytes], url: str) -> None:
    """Wait until a gateway subprocess answers /readyz with 200 (failing if it exits)."""

    async def ready() -> bool:
        assert process.poll() is None, "the gateway process exited"
        return await answers_ok(session, url + "/readyz")

    await eventually(ready, timeout_s=30)


@contextlib.asynccontextmanager
async def tasks_shown_if_slow(what: str, after_s: float = 15.0) -> AsyncIterator[None]:
    """If the block outlives `after_s`, print every asyncio task's stack to the process's own stderr (past
    pytest's capture, so the CI log has it even when the block ends in time after all): a teardown that
    hangs then says where."""

    async def watch() -> None:
        await asyncio.sleep(after_s)
        out = sys.__stderr__
        print(f"\n{what}: still running after {after_s:.0f} s; the tasks:", file=out)
        for task in asyncio.all_tasks():
            task.print_stack(file=out)

    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
