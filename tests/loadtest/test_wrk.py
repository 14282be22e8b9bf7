"""The wrk driver of the bench: pre-signed requests the gateway accepts, each sent at most once, answers
counted by status and outcome; and `pushgw bench` refusing to start without wrk."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from gateway.auth import Scope, Target, Verifier
from gateway.core.local_servers import free_port
from loadtest import wrk
from loadtest.pinning import Pinning, on_cpu
from loadtest.presigned import BATCH, SINGLE, Customers, RequestMaker

ROOT = Path(__file__).resolve().parents[2]
needs_wrk = pytest.mark.skipif(wrk.binary() is None, reason="wrk is not installed")


def _split(raw: bytes) -> tuple[str, CIMultiDict[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    request_line, *lines = head.decode().split("\r\n")
    headers: CIMultiDict[str] = CIMultiDict(line.split(": ", 1) for line in lines)  # type: ignore[misc]
    return request_line, headers, body


def test_presigned_requests_verify_and_spread_customers_within_the_limit() -> None:
    maker = RequestMaker("bench", "bench-secret", Customers(per_customer=5), batch_size=10)
    verifier = Verifier({"bench": "bench-secret"}, {}, 300, open_ingress=False)
    events: list[dict[str, str]] = []
    for target, raw in [*((SINGLE, r) for r in maker.singles(12)), *((BATCH, r) for r in maker.batches(3))]:
        request_line, headers, body = _split(raw)
        assert request_line == f"POST {target} HTTP/1.1"
        assert int(headers["Content-Length"]) == len(body)
        proxy = CIMultiDictProxy(headers)
        verifier.verify(Target("POST", target, "http", "127.0.0.1", proxy), body, Scope.EVENTS, time.time())
        data = orjson.loads(body)
        events += data["events"] if target == BATCH else [data]
    assert len({event["event_id"] for event in events}) == len(events) == 42
    per_customer = Counter(event["customer_id"] for event in events)
    assert max(per_customer.values()) == 5
    assert len(per_customer) == 3 + 6  # 12 singles over 3 customers, 30 batched events over 6 more
    assert maker.customers.unbound() == range(9) and maker.customers.unbound() == range(9, 9)


def test_customers_after_redis_is_emptied_are_new_ones() -> None:
    customers = Customers(per_customer=5)
    assert customers.take(11) == 0
    customers.forget_bindings()
    assert customers.unbound() == range(3, 3)
    assert customers.take(5) == 3 and customers.unbound() == range(3, 4)


@contextmanager
def _recording_server() -> Iterator[tuple[str, list[bytes]]]:
    """An HTTP server on its own thread answering every POST 202 {"status":"queued"}, keeping the bodies."""
    bodies: list[bytes] = []

    async def record(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({"status": "queued"}, status=202)

    app = web.Application()
    app.router.add_post("/{tail:.*}", record)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    port = free_port()
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", bodies
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()


@needs_wrk
def test_wrk_sends_each_request_at_most_once_and_counts_the_answers(tmp_path: Path) -> None:
    maker = RequestMaker("bench", "bench-secret", Customers(per_customer=5))
    path = tmp_path / "single.requests"
    assert wrk.write_requests(path, maker.singles(300)) == 300
    with _recording_server() as (url, bodies):
        run = wrk.run(url, path, 1.0)
    assert run.exhausted  # far fewer requests than a second takes: it stopped instead of repeating one
    assert len(bodies) == len(set(bodies)) <= 300
    assert run.statuses == {"202": run.ok} and run.outcomes == {"queued": run.ok}
    assert 0 < run.ok <= len(bodies) and run.non_2xx == 0


@needs_wrk
def test_wrk_wraps_only_when_told(tmp_path: Path) -> None:
    path = tmp_path / "hello.requests"
    wrk.write_requests(path, RequestMaker("k", "s", Customers(5)).singles(20, fresh=False))
    with _recording_server() as (url, bodies):
        run = wrk.run(url, path, 1.0, wrap=True)
    assert not run.exhausted and run.requests > 20 and len(set(bodies)) == 20


def test_parse_reads_the_scripts_line_among_wrks_own_output() -> None:
    line = (
        'wrk-json {"requests":10,"duration_us":2000000,"exhausted":0,"latency_us":{"p50":1000,"p99":5000,'
        '"max":9000},"errors":{"connect":0,"read":1,"write":0,"timeout":2},"statuses":{"202":7,"503":3},'
        '"outcomes":{"queued":7}}'
    )
    run = wrk.parse(f"Running 2s test @ http://x\n  1 threads and 64 connections\n{line}\n")
    assert (run.requests, run.seconds, run.exhausted) == (10, 2.0, False)
    assert run.latency_ms == {"p50": 1.0, "p99": 5.0, "max": 9.0}
    assert run.ok == 7 and run.non_2xx == 3 + 3  # 503s, a read error and two timeouts
    with pytest.raises(wrk.WrkFailed):
        wrk.parse("Running 2s test\n")


def test_pinning_puts_commands_on_a_cpu() -> None:
    assert on_cpu(None, ["wrk"]) == ["wrk"]
    assert on_cpu(1, ["wrk", "-t1"]) == ["taskset", "-c", "1", "wrk", "-t1"]
    pins = Pinning.detect()
    if len(os.sched_getaffinity(0)) < 2:
        assert not pins.pinned and "not pinned" in pins.describe()
    else:
        assert pins.pinned == (pins.product is not None) and pins.product != pins.load


def test_bench_without_wrk_says_how_to_install_it(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from gateway.cli import main; main()", "bench", "--quick"]
    done = subprocess.run(
        command,
        env={**os.environ, "PATH": str(tmp_path)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [wrk.MISSING]
    assert "apt-get install wrk" in done.stderr and "brew install wrk" in done.stderr
