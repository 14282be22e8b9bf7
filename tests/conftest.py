"""Shared fixtures: one real redis-server per session (flushed per test), the simulator, gateway and
workers as real servers and tasks on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.core.logs import JsonFormatter
from gateway.core.settings import Settings
from tests.support import APP_SECRET, APPID, KEY_ID, SECRET, Client, RedisServer, Running
from wechatsim.app import SimConfig
from wechatsim.app import create_app as create_sim
from workers.worker import run_worker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session's server, emptied first (restarted first if a test stopped it)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
def settings_for(redis_server: RedisServer) -> Callable[..., Settings]:
    """Settings for this test's stack; keyword arguments override fields."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "redis_url": redis_server.url,
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

    return build


@dataclass
class Stack:
    """A running gateway, simulator and (optionally) workers over one Redis."""

    settings: Settings
    client: Client
    sim_url: str
    redis: Redis
    session: aiohttp.ClientSession
    _workers: list[tuple[asyncio.Event, asyncio.Task[int]]] = field(default_factory=list)

    def start_worker(self, name: str | None = None, **overrides: Any) -> None:
        settings = Settings(**{**self.settings.__dict__, **overrides}) if overrides else self.settings
        stopping = asyncio.Event()
        task = asyncio.create_task(run_worker(settings, stopping, name=name), name=f"worker-{name}")
        self._workers.append((stopping, task))

    async def stop_workers(self) -> None:
        for stopping, _ in self._workers:
            stopping.set()
        for _, task in self._workers:
            await task
        self._workers.clear()

    async def sim(self, method: str, path: str, data: Any = None) -> Any:
        async with self.session.request(method, self.sim_url + path, json=data) as response:
            return await response.json()

    async def delivered_to(self, openid: str) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = (await self.sim("GET", f"/sim/messages?touser={openid}"))["messages"]
        return messages

    async def status_of(self, event_id: str) -> str | None:
        status, body = await self.client.call("GET", f"/v1/events/{event_id}")
        return str(body["status"]) if status == 200 else None


@pytest.fixture
async def stack_for(redis: Redis, settings_for: Callable[..., Settings]) -> AsyncIterator[Callable[..., Any]]:
    """Build a stack: `await stack_for(workers=1, sim_config=..., **settings overrides)`."""
    stacks: list[tuple[Stack, Running, Running]] = []
    session = aiohttp.ClientSession()

    async def build(workers: int = 1, sim_config: SimConfig | None = None, **overrides: Any) -> Stack:
        sim = await Running(create_sim(sim_config or SimConfig(apps={APPID: APP_SECRET}))).start()
        settings = settings_for(wechat_base_url=sim.url, **overrides)
        gateway = await Running(create_app(settings)).start()
        stack = Stack(settings, Client(session, gateway.url), sim.url, redis, session)
        for index in range(workers):
            stack.start_worker(name=f"w{index}")
        stacks.append((stack, gateway, sim))
        return stack

    yield build
    for stack, gateway, sim in stacks:
        with contextlib.suppress(Exception):
            await stack.stop_workers()
        await gateway.stop()
        await sim.stop()
    await session.close()


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path


_NEVER_LOGGED = ("6222020200001234", SECRET, APP_SECRET)  # make_event's account and the fixture secrets


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test of the suite is also a log scan: the default account number and the fixture secrets
    must never appear in a log line (as the JSON formatter would write it, extras included)."""
    caplog.set_level(logging.INFO)
    yield
    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record)
        leaked = [secret for secret in _NEVER_LOGGED if secret in line]
        assert not leaked, f"a log line holds a secret or account number: {record.name}: {record.msg}"
