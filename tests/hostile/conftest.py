"""A gateway served as `pushgw gateway` serves it (gateway/server.py: guarded connections, optional TLS and
metrics listener), and raw-socket clients that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import pytest

from gateway.core.settings import Settings
from gateway.server import Listening, gateway_listening
from tests.support import Client

ACCOUNT = "6222020200001234"  # make_event's account: no answer and no log line may hold it


@dataclass
class Served:
    """A running gateway: its settings, URLs, a signed client and the listener's connection table."""

    settings: Settings
    listening: Listening
    client: Client
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return self.listening.url

    @property
    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        assert parts.hostname is not None and parts.port is not None
        return parts.hostname, parts.port

    @property
    def open_connections(self) -> int:
        return len(self.listening.runner.table)

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.session.get(self.url + path) as response:
            body = await response.read()
            return response.status, orjson.loads(body) if body else None


GatewayFactory = Callable[..., Awaitable[Served]]


@pytest.fixture
async def gateway_for(settings_for: Callable[..., Settings]) -> AsyncIterator[GatewayFactory]:
    """Start gateways: `await gateway_for(**settings overrides)`; each stops at the end of the test."""
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())

        async def start(**overrides: Any) -> Served:
            settings = settings_for(**overrides)
            listening = await stack.enter_async_context(gateway_listening(settings, "127.0.0.1", 0))
            return Served(settings, listening, Client(session, listening.url), session)

        yield start


@dataclass(frozen=True)
class RawAnswer:
    """An HTTP/1.1 answer read off a raw socket."""

    status: int
    headers: dict[str, str]
    body: bytes
    raw: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


async def raw_exchange(address: tuple[str, int], data: bytes, *, timeout_s: float = 10.0) -> RawAnswer:
    """Send `data` as it is, read the answer until the server closes or it is complete."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            return await read_answer(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> RawAnswer:
    """One answer with a Content-Length body (every answer of the gateway has one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return RawAnswer(status, headers, body, head + body)


async def closed_by_server(reader: asyncio.StreamReader, within_s: float) -> bool:
    """Whether the server closes the connection within `within_s` (whatever it sends before)."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True
