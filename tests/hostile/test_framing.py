"""Client faults at the HTTP layer: broken framing, odd encodings and disconnects are 4xx in the one error
shape (or, for a client that went away, counted as 499), never a 5xx or an ERROR line, and neither an answer
nor a log line ever holds the request's bytes. No answer names the server software's version."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from prometheus_client import REGISTRY

from tests.gateway.helpers import assert_error_shape
from tests.hostile.conftest import ACCOUNT, GatewayFactory, RawAnswer, Served, raw_exchange, read_answer
from tests.support import eventually, make_event, signed_headers

pytestmark = pytest.mark.e2e

MARK = "PLANTED-7c1e"  # planted beside the account number where no JSON body is: never to be repeated
EVENT = orjson.dumps(make_event(counterparty=MARK))


def _head(*lines: bytes, method: bytes = b"POST", target: bytes = b"/v1/events") -> bytes:
    return b"\r\n".join([method + b" " + target + b" HTTP/1.1", b"Host: gw", *lines]) + b"\r\n\r\n"


def _post(body: bytes, *lines: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return _head(b"Content-Type: application/json", b"Content-Length: %d" % size, *lines) + body


def _chunked(chunks: bytes) -> bytes:
    return _head(b"Content-Type: application/json", b"Transfer-Encoding: chunked") + chunks


_HUGE = ("x-filler: " + ACCOUNT + MARK + "y" * 9000).encode()
FRAMING: list[tuple[str, bytes, set[int]]] = [
    # the body is one byte longer than declared: its last byte starts the next request line
    ("content-length-one-short", _post(EVENT, length=len(EVENT) - 1) + _post(EVENT), {400}),
    ("content-length-not-a-number", _post(EVENT, length=0).replace(b"Length: 0", b"Length: 12a"), {400}),
    ("content-length-negative", _post(EVENT, length=0).replace(b"Length: 0", b"Length: -5"), {400}),
    ("two-content-lengths", _post(EVENT, b"Content-Length: %d" % (len(EVENT) + 1)), {400}),
    ("length-and-chunked", _post(EVENT, b"Transfer-Encoding: chunked"), {400}),
    ("bad-chunk-size", _chunked(b"zz\r\n" + EVENT + b"\r\n0\r\n\r\n"), {400}),
    ("chunk-longer-than-said", _chunked(b"5\r\n" + EVENT + b"\r\n0\r\n\r\n"), {400}),
    ("chunk-without-crlf", _chunked(b"%x\r\n" % len(EVENT) + EVENT + b"XX0\r\n\r\n"), {400}),
    (
        "unknown-transfer-coding",
        _post(EVENT, length=0).replace(b"Content-Length: 0", b"Transfer-Encoding: gzip"),
        {400},
    ),
    ("oversized-header", _post(EVENT, _HUGE), {431}),
    ("too-many-headers", _post(EVENT, *(b"x-h%d: %s" % (i, MARK.encode()) for i in range(200))), {431}),
    (
        "oversized-request-line",
        _post(EVENT).replace(b"/v1/events", b"/v1/events/" + (ACCOUNT * 800).encode()),
        {431},
    ),
    ("garbage-request-line", b"GARBAGE " + ACCOUNT.encode() + MARK.encode() + b"\r\n\r\n" + EVENT, {400}),
    ("bad-method-bytes", _post(EVENT).replace(b"POST", b"P@ST" + MARK.encode(), 1), {400}),
    ("bad-version", _post(EVENT).replace(b"HTTP/1.1", b"HTTP/1.x" + MARK.encode(), 1), {400}),
    ("header-name-with-space", _post(EVENT, b"Bad Name: " + MARK.encode()), {400}),
    ("nul-in-header-value", _post(EVENT, b"x-v: " + MARK.encode() + b"\x00" + ACCOUNT.encode()), {400}),
    ("no-host", _post(EVENT).replace(b"Host: gw\r\n", b""), {400}),
    (
        "tls-on-the-plain-port",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + MARK.encode() + b"\r\n\r\n",
        {400},
    ),
]


def assert_ours(answer: RawAnswer, statuses: set[int]) -> None:
    """An answer of the gateway in the one error shape, holding nothing of the request."""
    assert answer.status in statuses, answer.raw[:300]
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert_error_shape(answer.json())
    assert ACCOUNT.encode() not in answer.raw and MARK.encode() not in answer.raw, answer.raw
    assert answer.headers.get("server") == "pushgw", answer.headers


def assert_logs_hold_nothing_of_it(caplog: pytest.LogCaptureFixture) -> None:
    assert ACCOUNT not in caplog.text and MARK not in caplog.text
    for record in caplog.records:
        for value in (record.getMessage(), str(record.exc_info), str(record.args)):
            assert ACCOUNT not in value and MARK not in value, record
        assert record.levelno < logging.ERROR, record.getMessage()


@pytest.fixture
async def served(gateway_for: GatewayFactory) -> Served:
    return await gateway_for(body_timeout_s=2.0)


@pytest.mark.parametrize(("name", "data", "statuses"), FRAMING, ids=[name for name, _, _ in FRAMING])
async def test_framing_errors_get_the_error_shape_and_no_echo(
    served: Served, caplog: pytest.LogCaptureFixture, name: str, data: bytes, statuses: set[int]
) -> None:
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(*served.address)
    try:
        writer.write(data)
        await writer.drain()
        answers = []
        async with asyncio.timeout(10):
            while not reader.at_eof():
                try:
                    answers.append(await read_answer(reader))
                except asyncio.IncompleteReadError as exc:
                    assert not exc.partial, exc.partial  # closed between answers, never inside one
                    break
    finally:
        writer.close()
    assert answers, name
    for answer in answers[:-1]:  # a request before the broken one is answered as itself (e.g. invalid JSON)
        assert_ours(answer, {400, 401, 413, 415, 422})
    assert_ours(answers[-1], statuses)
    assert_logs_hold_nothing_of_it(caplog)


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip", "deflate", "x-pushgw", "gzip, identity"])
async def test_a_content_encoding_gets_415(served: Served, encoding: str) -> None:
    for path in ("/v1/events", "/v1/events/batch"):
        body = EVENT if path == "/v1/events" else b'{"events": [' + EVENT + b"]}"
        headers = {**signed_headers(body, target=path), "Content-Encoding": encoding}
        async with served.session.post(served.url + path, data=body, headers=headers) as response:
            assert response.status == 415, (encoding, path)
            error = orjson.loads(await response.read())
            assert_error_shape(error)
            assert error["error"]["code"] == "unsupported_encoding"


async def test_identity_is_no_encoding(served: Served) -> None:
    headers = {**signed_headers(EVENT), "Content-Encoding": "identity"}
    async with served.session.post(served.url + "/v1/events", data=EVENT, headers=headers) as response:
        assert response.status == 202, await response.read()


async def test_no_answer_names_the_server_version(served: Served) -> None:
    for path in ("/healthz", "/readyz", "/nowhere", "/v1/events"):
        async with served.session.get(served.url + path) as response:
            assert response.headers["Server"] == "pushgw", (path, response.headers)
    status, _ = await served.client.call("POST", "/v1/events", make_event())
    assert status == 202


def _requests(route: str, codes: str) -> float:
    """pushgw_http_requests_total of `route` over the codes starting with `codes` (the process's registry)."""
    total = 0.0
    for family in REGISTRY.collect():
        if family.name == "pushgw_http_requests":
            for sample in family.samples:
                labels = sample.labels
                if (
                    sample.name.endswith("_total")
                    and labels["route"] == route
                    and labels["code"].startswith(codes)
                ):
                    total += sample.value
    return total


@pytest.mark.parametrize(
    "head",
    [
        _post(EVENT)[: -len(EVENT)],
        _chunked(b"%x\r\n" % len(EVENT)),
    ],
    ids=["content-length", "chunked"],
)
async def test_a_client_gone_mid_body_is_no_error(
    served: Served, caplog: pytest.LogCaptureFixture, head: bytes
) -> None:
    """Counted as 499 (the client closed its request), never as a 5xx, and no ERROR line."""
    before_5xx, before_499 = _requests("/v1/events", "5"), _requests("/v1/events", "499")
    for _ in range(3):
        _, writer = await asyncio.open_connection(*served.address)
        writer.write(head + EVENT[:40])
        await writer.drain()
        await eventually(lambda: _opened(served), timeout_s=5)
        writer.close()

    async def counted() -> bool:
        return _requests("/v1/events", "499") == before_499 + 3

    await eventually(counted, timeout_s=10)
    assert _requests("/v1/events", "5") == before_5xx
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert_logs_hold_nothing_of_it(caplog)


async def _opened(served: Served) -> bool:
    return served.open_connections >= 1


async def test_a_client_gone_before_its_head_leaves_nothing(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    before = _requests("/v1/events", "")
    answer = await raw_exchange(served.address, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert answer.status == 200
    _, writer = await asyncio.open_connection(*served.address)
    writer.write(b"POST /v1/events HTTP/1.1\r\nHost: gw\r\nContent-Le")
    await writer.drain()
    writer.close()
    await eventually(lambda: _none_open(served), timeout_s=5)
    assert _requests("/v1/events", "") == before
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


async def _none_open(served: Served) -> bool:
    return served.open_connections == 0


async def test_a_chunk_broken_mid_body_gets_400_at_once(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    """The bad chunk arrives while the handler is reading: answered at once, not at the body deadline."""
    reader, writer = await asyncio.open_connection(*served.address)
    try:
        writer.write(_chunked(b"%x\r\n" % 20 + EVENT[:20] + b"\r\n"))
        await writer.drain()
        await eventually(lambda: _opened(served), timeout_s=5)
        await asyncio.sleep(0.1)  # the handler is waiting for the rest
        writer.write(b"zz" + MARK.encode() + b"\r\n" + EVENT[20:] + b"\r\n0\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(served.settings.body_timeout_s / 2):
            answer = await read_answer(reader)
    finally:
        writer.close()
    assert_ours(answer, {400})
    assert answer.json()["error"]["code"] == "malformed_body"
    assert_logs_hold_nothing_of_it(caplog)
