"""`--processes N`: whichever process answers a scrape serves the metrics of all of them, so counters add up
(no saw-tooth when the kernel spreads scrapes over the processes sharing the port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.local_servers import free_port
from tests.observability.live import http, until
from tests.observability.tools import run_tool
from tests.support import KEY_ID, SECRET, RedisServer

pytestmark = pytest.mark.e2e
PROCESSES = 2
PID_LABEL = re.compile(r"[{,]pid=")


def spawned_children(parent: int) -> list[int]:
    """Pids of the `multiprocessing` spawn children of `parent` (not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


@contextmanager
def pushgw(tmp_path: Path, redis_server: RedisServer, *args: str, **env: str) -> Iterator[int]:
    """`pushgw ARGS` running with PROCESSES processes; yields the parent's pid, SIGTERMs it at the end."""
    redis_server.fresh()
    environ = {
        **os.environ,
        "PUSHGW_REDIS_URL": redis_server.url,
        "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
        "PUSHGW_LOG_LEVEL": "WARNING",
        "PUSHGW_SHUTDOWN_TIMEOUT_S": "5",
        **env,
    }
    environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [str(Path(sys.executable).with_name("pushgw")), *args, "--processes", str(PROCESSES)]
    with (tmp_path / "pushgw.log").open("wb") as log:
        process = subprocess.Popen(command, env=environ, stdout=log, stderr=subprocess.STDOUT)
    try:
        until(lambda: len(spawned_children(process.pid)) == PROCESSES, "both processes started")
        yield process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, (tmp_path / "pushgw.log").read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def samples(text: str, name: str, **labels: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]


def scrape(url: str) -> str:
    status, body = http("GET", url)
    assert status == 200, url
    return body.decode()


def test_gateway_processes_add_up(tmp_path: Path, redis_server: RedisServer) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with pushgw(tmp_path, redis_server, "gateway", "--port", str(port), PUSHGW_METRICS_PORT="0") as parent:
        answered = 0  # /healthz requests that got an answer, from whichever process

        def healthy() -> bool:
            nonlocal answered
            status, _ = http("GET", base + "/healthz")
            answered += 1
            return status == 200

        until(healthy, "gateway healthz")
        # both processes listen: every new connection goes to one of them at random
        until(lambda: all(healthy() for _ in range(20)), "every process answers")
        seen: list[float] = []
        text = ""
        for scrapes_before in range(6):
            for _ in range(25):
                assert healthy()
            text = scrape(base + "/metrics")
            healthz = sum(samples(text, "pushgw_http_requests_total", route="/healthz"))
            assert samples(text, "pushgw_http_requests_total", route="/metrics") == (
                [float(scrapes_before)] if scrapes_before else []
            )
            assert healthz == answered, text
            assert not seen or healthz >= seen[-1]
            seen.append(healthz)
            assert not PID_LABEL.search(text)  # one series per process would carry a pid label
        assert len(spawned_children(parent)) == PROCESSES
        assert samples(text, "pushgw_build_info") == [1.0]
        result = run_tool("promtool", "check", "metrics", stdin=text.encode())
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_worker_processes_share_the_metrics_port(tmp_path: Path, redis_server: RedisServer) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    nowhere = f"http://127.0.0.1:{free_port()}"  # WeChat unreachable: every process counts failed refreshes
    with pushgw(
        tmp_path, redis_server, "worker", PUSHGW_METRICS_PORT=str(port), PUSHGW_WECHAT_BASE_URL=nowhere
    ):
        until(lambda: samples(scrape(url), "pushgw_redis_up") == [1.0], "a queue sample")
        failed: list[float] = []
        text = ""
        for _ in range(20):  # whichever process answers: one series each, counters never go back
            text = scrape(url)
            assert not PID_LABEL.search(text)  # one series per process would carry a pid label
            assert samples(text, "pushgw_deliveries_in_flight") == [0.0]
            assert len(samples(text, "pushgw_build_info")) == 1
            assert samples(text, "pushgw_redis_up") in ([], [1.0])  # the queue figures are not summed
            assert "process_cpu_seconds_total" not in text  # one process's CPU at random would saw-tooth
            failed.extend(samples(text, "pushgw_token_refreshes_total", result="error"))
        assert failed == sorted(failed), failed
        result = run_tool("promtool", "check", "metrics", stdin=text.encode())
        assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
