"""Shared fixtures: one real redis-server per session (flushed per test), the simulator, gateway and
workers as real servers and tasks on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
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
from tests.support import (
    APP_SECRET,
    APPID,
    SECRET,
    Client,
    RedisServer,
    Running,
    stack_settings,
    tasks_shown_if_slow,
)
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
        return stack_settings(redis_server.url, **overrides)

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
    async with tasks_shown_if_slow("stack teardown"):
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
_DIGIT_RUN = re.compile(r"(?<!\d)\d{13,19}(?!\d)")
_OPENID = re.compile(r"oUser_[A-Za-z0-9_-]+")  # the fixtures' openids; a masked one shows 4 characters
_TOKEN = re.compile(r"access_token=[^&\s\"]{8,}|[A-Za-z0-9_-]{120,}")  # the simulator's tokens are 136


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _looks_like_a_time(digits: str) -> bool:
    """Unix times in ms (13 digits) or ns (19): stream ids and timestamps, not account numbers."""
    return (len(digits) == 13 and digits.startswith("1")) or (len(digits) == 19 and digits.startswith("17"))


def leaks_in(line: str) -> list[str]:
    """What a log line must never hold: a full account number (a Luhn-valid run of 13 to 19 digits), an
    openid in clear, an access token, or a fixture secret. Returns the kinds found."""
    found = [f"secret {secret[:4]}" for secret in _NEVER_LOGGED if secret in line]
    accounts = [run for run in _DIGIT_RUN.findall(line) if _luhn_valid(run) and not _looks_like_a_time(run)]
    found += ["account number"] * bool(accounts)
    found += ["openid"] * bool(_OPENID.search(line))
    found += ["access token"] * bool(_TOKEN.search(line))
    return found


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Every test of the suite is also a log scan: no full account number (any Luhn-valid 13-19 digit
    run), no openid in clear, no access token and no fixture secret may appear in a log line (as the JSON
    formatter would write it, extras included)."""
    caplog.set_level(logging.INFO)
    yield
    formatter = JsonFormatter()
    for record in caplog.records:
        leaked = leaks_in(formatter.format(record))
        assert not leaked, f"a log line holds {', '.join(leaked)}: {record.name}: {record.msg}"
