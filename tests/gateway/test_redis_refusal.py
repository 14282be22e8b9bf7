"""Redis refusing the gateway (no password, a wrong one, an unknown user, protected mode) is
reported as a refusal, not as an outage or unreadable settings, and the password is never shown: not by
/readyz, the readiness problems, the logs, nor the settings' repr and errors."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.app import create_app
from gateway.core.local_servers import free_port, server_command
from gateway.core.redis import (
    AUTH_FAILED,
    AUTH_REQUIRED,
    NO_EPOCH,
    PROTECTED_MODE,
    connect,
    refusal,
)
from gateway.core.settings import ConfigError, Settings, parse_setting
from gateway.readiness import Readiness
from tests.support import Running, eventually, stack_settings
from tests.support import server_binary_for_tests as server_binary
from workers.worker import run_worker

PASSWORD = "refusal-test-password-7f3a"  # noqa: S105 - a fixture password
WRONG = "wrong-password-91c2"
# what Redis answers a client from another host when it has no password (seen from a container)
DENIED = (
    "DENIED Redis is running in protected mode because protected mode is enabled and no password is set for"
    " the default user. In this mode connections are only accepted from the loopback interface."
)


@pytest.fixture(scope="module")
def guarded_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A redis-server that requires PASSWORD (its port)."""
    port = free_port()
    directory: Path = tmp_path_factory.mktemp("guarded-redis")
    command = [*server_command(server_binary(), port, directory), "--requirepass", PASSWORD]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"-NOAUTH"):
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def problems_of(url: str) -> list[str]:
    readiness = Readiness(require_durable=True)
    redis = connect(stack_settings(url))
    try:
        await readiness.refresh(redis)
    finally:
        await redis.aclose()
    return readiness.problems


@pytest.mark.parametrize(
    ("userinfo", "expected"),
    [("", AUTH_REQUIRED), (f":{WRONG}@", AUTH_FAILED), (f"nobody:{PASSWORD}@", AUTH_FAILED)],
    ids=["no-password", "wrong-password", "unknown-user"],
)
async def test_readiness_names_the_refusal(
    guarded_port: int, userinfo: str, expected: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert await problems_of(f"redis://{userinfo}127.0.0.1:{guarded_port}/0") == [expected]
    assert PASSWORD not in caplog.text and WRONG not in caplog.text
    assert expected in caplog.text


async def test_the_right_password_gets_in(guarded_port: int) -> None:
    assert await problems_of(f"redis://:{PASSWORD}@127.0.0.1:{guarded_port}/0") == [NO_EPOCH]


@pytest.fixture
async def refused_gateway(guarded_port: int) -> AsyncIterator[str]:
    running = await Running(
        create_app(stack_settings(f"redis://:{WRONG}@127.0.0.1:{guarded_port}/0"))
    ).start()
    yield running.url
    await running.stop()


async def test_readyz_says_why(refused_gateway: str, caplog: pytest.LogCaptureFixture) -> None:
    async with aiohttp.ClientSession() as session, session.get(refused_gateway + "/readyz") as response:
        assert response.status == 503
        body = await response.text()
    assert AUTH_FAILED in body
    assert WRONG not in body + caplog.text


async def test_a_worker_waits_saying_why(guarded_port: int, caplog: pytest.LogCaptureFixture) -> None:
    settings = stack_settings(f"redis://:{WRONG}@127.0.0.1:{guarded_port}/0")
    stopping = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, stopping, name="refused"))

    async def waits_saying_why() -> bool:
        return any(
            "waiting for redis" in record.getMessage() and AUTH_FAILED in record.getMessage()
            for record in caplog.records
        )

    try:
        await eventually(waits_saying_why, timeout_s=10)
    finally:
        stopping.set()
        await worker
    assert WRONG not in caplog.text


def test_refusal_tells_refusals_from_other_errors() -> None:
    assert refusal(ResponseError(DENIED)) == PROTECTED_MODE
    assert refusal(AuthenticationError("Authentication required.")) == AUTH_REQUIRED
    assert refusal(AuthenticationError("invalid username-password pair or user is disabled.")) == AUTH_FAILED
    assert refusal(ResponseError("ERR unknown command 'CONFIG'")) is None
    assert refusal(RedisConnectionError("Error 111 connecting to redis:6379. Connection refused.")) is None
    assert refusal(TimeoutError()) is None


def test_settings_never_show_the_password() -> None:
    url = f"redis://:{PASSWORD}@redis:6379/0"
    shown = repr(Settings(redis_url=url))
    assert PASSWORD not in shown and "redis://:***@redis:6379/0" in shown
    with pytest.raises(ConfigError) as raised:
        parse_setting("redis_url", f"http://:{PASSWORD}@redis:6379/0")
    assert PASSWORD not in str(raised.value) and "PUSHGW_REDIS_URL" in str(raised.value)
