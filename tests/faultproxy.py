"""A small asyncio TCP fault proxy for tests: put it between a client and a server (the gateway or a worker
and redis-server) and switch, at any time, how the wire behaves.

Modes:
- `FORWARD`: forward both ways untouched.
- `LATENCY`: forward, each chunk held `latency_s` first (both directions): a slow network or a slow server.
- `BLACKHOLE`: accept and read, never answer and never forward: a peer that is unreachable but whose
  connections do not fail (a dropped route, a hung host). New connections are accepted and go nowhere.
- `RESET`: every open connection is closed with a TCP RST (SO_LINGER 0), and so is every new one.

Switching applies to the connections already open too: their next chunk follows the new mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field
from enum import StrEnum

from gateway.core.local_servers import free_port

CHUNK_BYTES = 65536


class Mode(StrEnum):
    FORWARD = "forward"
    LATENCY = "latency"
    BLACKHOLE = "blackhole"
    RESET = "reset"


@dataclass(eq=False)  # hashed by identity: a set of open links
class _Link:
    """One client connection and, unless blackholed from the start, its upstream connection."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST instead of a FIN: the peer sees 'connection reset by peer'."""
    if writer is None or writer.transport.is_closing():
        return
    sock = writer.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Listens on a free loopback port and forwards to `target_port`; use `port` in place of the target's."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = free_port()
        self.mode = Mode.FORWARD
        self.latency_s = 0.0
        self.connections = 0  # accepted so far, whatever the mode
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    @property
    def url(self) -> str:
        """A redis:// URL through the proxy (the target is a redis-server in these tests)."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            await self._drop(link, rst=False)
        if self._server is not None:
            await self._server.wait_closed()

    async def set_mode(self, mode: Mode, latency_s: float = 0.0) -> None:
        """Switch the mode; RESET also resets every connection open now."""
        self.mode, self.latency_s = mode, latency_s
        if mode is Mode.RESET:
            for link in list(self._links):
                await self._drop(link, rst=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode is Mode.RESET:
            _reset(writer)
            return
        link = _Link(writer)
        self._links.add(link)
        if self.mode is Mode.BLACKHOLE:
            await self._swallow(reader)  # ends when the client gives up, or on a switch to RESET
            await self._drop(link, rst=False)
            return
        try:
            up_reader, link.upstream = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            await self._drop(link, rst=True)
            return
        link.tasks = [
            asyncio.create_task(self._pump(reader, link.upstream, link), name="proxy-up"),
            asyncio.create_task(self._pump(up_reader, writer, link), name="proxy-down"),
        ]
        await asyncio.gather(*link.tasks, return_exceptions=True)
        await self._drop(link, rst=False)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while await reader.read(CHUNK_BYTES):
                pass

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while chunk := await reader.read(CHUNK_BYTES):
                if self.mode is Mode.LATENCY and self.latency_s > 0:
                    await asyncio.sleep(self.latency_s)
                if self.mode is Mode.BLACKHOLE:
                    continue  # read and dropped: the other side waits for an answer that never comes
                if self.mode is Mode.RESET:
                    break
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # one side ended: end the other too, so neither waits on a half-open link
            for task in link.tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    async def _drop(self, link: _Link, *, rst: bool) -> None:
        self._links.discard(link)
        for writer in (link.client, link.upstream):
            if writer is None:
                continue
            if rst:
                _reset(writer)
            else:
                writer.close()
        current = asyncio.current_task()
        for task in link.tasks:
            if task is not current:
                task.cancel()
