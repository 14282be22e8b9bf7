"""Slow and idle connections never starve signed traffic: a request head must be complete in time, a body
too (408), an idle connection is closed, and past the connection limit the connection stalled longest is
closed for the new one. Each test opens a few dozen sockets and lasts seconds (small limits and timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import cast

import orjson
import pytest
from prometheus_client import REGISTRY

from gateway.transport import ConnectionTable, GuardedConnection
from tests.gateway.helpers import assert_error_shape
from tests.hostile.conftest import GatewayFactory, Served, closed_by_server, read_answer
from tests.support import eventually, make_event

pytestmark = pytest.mark.e2e

ADMISSION = 8  # max_ingest_waiting of these gateways
EVENT = orjson.dumps(make_event())
BODYLESS_POST = (
    b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n" % len(EVENT)
)


@dataclass
class Clients:
    """Raw connections that misbehave, closed at the end."""

    address: tuple[str, int]
    streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def connect(self, first_bytes: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(*self.address)
        if first_bytes:
            writer.write(first_bytes)
            await writer.drain()
        self.streams.append((reader, writer))
        return reader, writer

    async def bodyless_post(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """The headers of a POST /v1/events, and never its body."""
        return await self.connect(BODYLESS_POST)

    async def trickler(self, every_s: float = 0.2) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A slowloris: a request head, one byte every `every_s`, never complete."""
        stream = await self.connect(b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nX-Slow: ")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while not stream[1].is_closing():
                    await asyncio.sleep(every_s)
                    stream[1].write(b"a")
                    await stream[1].drain()

        self.tasks.append(asyncio.create_task(trickle()))
        return stream

    def still_open(self) -> int:
        return sum(not reader.at_eof() for reader, _ in self.streams)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for _, writer in self.streams:
            writer.close()


@pytest.fixture
async def clients_of() -> AsyncIterator[list[Clients]]:
    made: list[Clients] = []
    yield made
    for clients in made:
        await clients.close()


def _closed(reason: str) -> float:
    for family in REGISTRY.collect():
        if family.name == "pushgw_ingress_connections_closed":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels["reason"] == reason:
                    return sample.value
    return 0.0


async def _signed_ingest_answers(served: Served, count: int) -> list[int]:
    """Statuses of `count` signed events, sent ADMISSION // 2 at a time (within the admission limit)."""
    statuses: list[int] = []
    while len(statuses) < count:
        wave = min(ADMISSION // 2, count - len(statuses))
        answers = await asyncio.gather(*(served.client.post_event(make_event()) for _ in range(wave)))
        statuses += [status for status, _ in answers]
    return statuses


async def test_slow_clients_twice_the_admission_limit_leave_ingest_answering(
    gateway_for: GatewayFactory, clients_of: list[Clients], caplog: pytest.LogCaptureFixture
) -> None:
    """2 x max_ingest_waiting connections send POST headers and never the body, as many trickle a head and
    as many say nothing: signed ingest still gets 202 and /readyz stays 200 while all of them are open."""
    served = await gateway_for(
        max_ingest_waiting=ADMISSION, body_timeout_s=60.0, header_timeout_s=60.0, idle_timeout_s=60.0
    )
    clients = Clients(served.address)
    clients_of.append(clients)
    for _ in range(2 * ADMISSION):
        await clients.bodyless_post()
        await clients.trickler()
        await clients.connect()

    async def all_accepted() -> bool:
        return served.open_connections >= 6 * ADMISSION

    await eventually(all_accepted, timeout_s=10)
    await asyncio.sleep(0.3)  # the bodyless requests are in their handlers, waiting for the bodies
    assert await _signed_ingest_answers(served, 2 * ADMISSION) == [202] * (2 * ADMISSION)
    assert (await served.get("/readyz"))[0] == 200
    assert clients.still_open() == 6 * ADMISSION
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_past_the_connection_limit_the_longest_stalled_go_first(
    gateway_for: GatewayFactory, clients_of: list[Clients], caplog: pytest.LogCaptureFixture
) -> None:
    limit = 20
    served = await gateway_for(
        max_connections=limit,
        max_ingest_waiting=ADMISSION,
        body_timeout_s=60.0,
        header_timeout_s=60.0,
        idle_timeout_s=60.0,
    )
    clients = Clients(served.address)
    clients_of.append(clients)
    evicted_before = _closed("evicted")
    for index in range(2 * limit):
        kind = index % 3
        opening = clients.bodyless_post if kind == 0 else clients.trickler if kind == 1 else clients.connect
        await opening()

        async def counted(expected: int = min(index + 1, limit)) -> bool:
            return served.open_connections == expected

        await eventually(counted, timeout_s=5)
    oldest, newest = clients.streams[:limit], clients.streams[limit:]
    assert all([await closed_by_server(reader, within_s=5) for reader, _ in oldest])
    assert not any(reader.at_eof() for reader, _ in newest)
    assert await _signed_ingest_answers(served, ADMISSION) == [202] * ADMISSION
    assert (await served.get("/readyz"))[0] == 200
    assert served.open_connections <= limit
    assert _closed("evicted") - evicted_before >= limit
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.fixture
async def quick(gateway_for: GatewayFactory) -> Served:
    """A gateway with short head and body deadlines (and a longer idle one, so they are told apart)."""
    return await gateway_for(body_timeout_s=0.5, header_timeout_s=0.5, idle_timeout_s=5.0)


async def test_a_body_not_complete_in_time_gets_408_and_the_connection_closes(
    quick: Served, clients_of: list[Clients]
) -> None:
    clients = Clients(quick.address)
    clients_of.append(clients)
    for partial in (b"", EVENT[:30]):
        reader, _ = await clients.connect(BODYLESS_POST + partial)
        started = time.monotonic()
        answer = await asyncio.wait_for(read_answer(reader), timeout=5)
        assert answer.status == 408
        assert_error_shape(answer.json())
        assert answer.json()["error"]["code"] == "body_timeout"
        assert answer.headers["connection"] == "close"
        assert await closed_by_server(reader, within_s=2)
        assert 0.4 <= time.monotonic() - started < 3


async def test_a_head_trickled_too_slowly_is_cut(quick: Served, clients_of: list[Clients]) -> None:
    clients = Clients(quick.address)
    clients_of.append(clients)
    header_timeouts = _closed("header_timeout")
    reader, _ = await clients.trickler(every_s=0.05)
    started = time.monotonic()
    assert await closed_by_server(reader, within_s=4)
    assert 0.4 <= time.monotonic() - started < 3
    assert _closed("header_timeout") == header_timeouts + 1


async def test_a_head_in_time_is_not_cut(quick: Served, clients_of: list[Clients]) -> None:
    """The header deadline starts with the head's first byte and ends with the head: a client that is
    merely not instant, and its next request on the same connection, are served."""
    clients = Clients(quick.address)
    clients_of.append(clients)
    reader, writer = await clients.connect()
    await asyncio.sleep(0.7)  # longer than the header deadline, before the first byte: only idle
    for _ in range(2):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
        await asyncio.sleep(0.2)
        writer.write(b"\r\n")
        assert (await asyncio.wait_for(read_answer(reader), timeout=5)).status == 200
        await asyncio.sleep(0.7)


async def test_an_idle_connection_is_closed(gateway_for: GatewayFactory, clients_of: list[Clients]) -> None:
    served = await gateway_for(idle_timeout_s=0.5, header_timeout_s=10.0)
    clients = Clients(served.address)
    clients_of.append(clients)
    silent, _ = await clients.connect()
    kept_alive, writer = await clients.connect(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert (await asyncio.wait_for(read_answer(kept_alive), timeout=5)).status == 200
    started = time.monotonic()
    assert await closed_by_server(silent, within_s=4)
    assert await closed_by_server(kept_alive, within_s=4)
    assert time.monotonic() - started < 3
    assert writer.is_closing() or kept_alive.at_eof()


class _Stub:
    """A connection as the table sees it."""

    def __init__(self, table: ConnectionTable) -> None:
        self.table = table
        self.closed = False

    def force_close(self) -> None:
        self.closed = True
        self.table.closed(cast(GuardedConnection, self))


def test_the_table_closes_the_longest_stalled_and_never_a_busy_one() -> None:
    table = ConnectionTable(limit=3)
    a, b, c, d, e = (_Stub(table) for _ in range(5))
    conns = {name: cast(GuardedConnection, stub) for name, stub in zip("abcde", (a, b, c, d, e), strict=True)}
    for name in "abc":
        assert table.opened(conns[name])
    table.busy(conns["a"])  # a's request is complete: it is being answered
    table.stalled(conns["b"])  # b was answered and waits again: its stall is now the newest
    assert table.opened(conns["d"])  # full: c stalled longest
    assert (a.closed, b.closed, c.closed) == (False, False, True)
    table.busy(conns["b"])
    table.busy(conns["d"])
    assert not table.opened(conns["e"])  # full and nothing stalled: the newcomer is refused
    assert len(table) == 3 and not any(stub.closed for stub in (a, b, d))
