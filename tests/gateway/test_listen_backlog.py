"""A burst of new connections while the process is busy is queued by the kernel, not dropped: with too short a
listen backlog the kernel drops their SYNs and each client waits a second to retry (the bench saw those
1 s stalls at the simulator when a worker opened its pool at once)."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from gateway.core.local_servers import free_port
from tests.support import RedisServer, answers_ok, eventually
from tests.workers.flows import PUSHGW, pushgw_env, ready_gateways, start_gateway

BURST = 400  # past aiohttp's default backlog of 128, within ours
SYN_RETRY_S = 1.0  # Linux's first SYN retransmission: a connect still pending by then had its SYN dropped
SOMAXCONN = int(Path("/proc/sys/net/core/somaxconn").read_text())  # the kernel caps every backlog at it

pytestmark = pytest.mark.skipif(
    SOMAXCONN < BURST, reason=f"net.core.somaxconn is {SOMAXCONN}: it caps the backlog"
)


async def test_the_gateway_queues_a_burst_of_connections_while_busy(redis_server: RedisServer) -> None:
    redis_server.fresh()  # the gateway is ready only on an initialised Redis
    gateway = start_gateway([PUSHGW], redis_server.url)
    async with ready_gateways([gateway]) as [url]:
        with _stopped(gateway[0].pid):
            assert _established(int(url.rsplit(":", 1)[1])) == BURST


async def test_the_simulator_queues_a_burst_of_connections_while_busy(redis_server: RedisServer) -> None:
    port = free_port()
    sim = subprocess.Popen(
        [PUSHGW, "sim", "--host", "127.0.0.1", "--port", str(port)],
        env=pushgw_env(redis_server.url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with aiohttp.ClientSession() as session:
            await eventually(lambda: answers_ok(session, f"http://127.0.0.1:{port}/healthz"))
        with _stopped(sim.pid):
            assert _established(port) == BURST
    finally:
        sim.terminate()
        sim.wait(timeout=10)


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The process frozen (SIGSTOP): it accepts nothing, so every connection waits in the listen backlog."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def _established(port: int) -> int:
    """How many of BURST connects to `port` complete their handshake before a dropped SYN could be retried."""
    sockets = [socket.socket() for _ in range(BURST)]
    try:
        for sock in sockets:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        pending = {sock.fileno(): sock for sock in sockets}
        poller = select.poll()
        for fd in pending:
            poller.register(fd, select.POLLOUT)
        done = 0
        deadline = time.monotonic() + SYN_RETRY_S * 0.9
        while pending and time.monotonic() < deadline:
            for fd, _ in poller.poll(50):
                sock = pending.pop(fd)
                poller.unregister(fd)
                done += sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        return done
    finally:
        for sock in sockets:
            sock.close()
