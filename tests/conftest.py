"""Shared fixtures: one real redis-server per session (flushed per test), the simulator, gateway and
workers as real servers and tasks on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from blockbuster import BlockBuster, blockbuster_ctx
from redis.asyncio import Redis
from redis.utils import get_lib_version

from gateway.core.logs import JsonFormatter
from gateway.core.redis import init_epoch
from gateway.core.settings import Settings
from tests.support import (
    APP_SECRET,
    APPID,
    SECRET,
    Client,
    RedisServer,
    Running,
    gateway_serving,
    stack_settings,
    tasks_shown_if_slow,
)
from wechatsim.app import SimConfig
from wechatsim.app import create_app as create_sim
from workers.worker import run_worker

# where a blocking call made in the event loop fails a test: under a frame of our packages (a handler, a
# worker's loops, the simulator, or what a test calls of them); the tests' own scaffolding (starting and
# stopping servers, reading fixtures) is not scanned, as aiohttp's suite scans only aiohttp
BLOCKING_SCANNED = ["gateway", "workers", "wechatsim", "loadtest"]
# redis-py reads its own version from the package metadata (os.stat over sys.path) once per process, when
# it makes its first connection, and caches it: done here, before any event loop runs
get_lib_version()


@pytest.fixture(autouse=True)
def blockbuster(request: pytest.FixtureRequest) -> Iterator[BlockBuster | None]:
    """In an async test, a blocking call (sleep, file or socket I/O, a lock, a subprocess wait) that our code
    makes in the event loop fails the test with BlockingError, as in aiohttp's suite: one blocked loop stalls
    every delivery, request and timer of a process. Sync tests (no loop) run without it."""
    if not inspect.iscoroutinefunction(request.function):
        yield None
        return
    with blockbuster_ctx(BLOCKING_SCANNED) as detector:
        yield detector


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A client of the session's server, emptied first (restarted first if a test stopped it) and
    initialised as a new deployment (its data epoch written: what `pushgw epoch init` does)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        await asyncio.to_thread(redis_server.start)  # it waits for the server: not in the event loop
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushall()
    await init_epoch(client, shards=1)
    yield client
    await client.aclose()


@pytest.fixture
def settings_for(redis_server: RedisServer, redis: Redis) -> Callable[..., Settings]:
    """Settings for this test's stack (over the emptied, initialised Redis); keyword arguments override
    fields."""

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
        gateway = await gateway_serving(settings).start()
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
