"""A live deployment for the observability tests: `pushgw sim`, `pushgw gateway` and `pushgw worker` as real
processes over a private Redis, a real Prometheus scraping them every second with deploy/alerts.yml loaded,
and a short load that goes through every outcome (delivered, retried, dead-lettered, failed, no binding,
duplicate, rejected)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from gateway.core.local_servers import free_port
from tests.observability.tools import DEPLOY, tool
from tests.support import APP_SECRET, APPID, KEY_ID, SECRET, RedisServer, make_event, signed_headers

FINAL = {"delivered", "failed", "dead_lettered", "no_binding"}
OPENIDS = {"C1": "oLiveOpenid_0001", "C2": "oLiveOpenid_0002", "C3": "oLiveGone_0003"}


@dataclass
class Live:
    gateway_url: str
    worker_url: str
    sim_url: str
    prometheus_url: str
    directory: Path
    event_ids: list[str] = field(default_factory=list)

    @property
    def scrape_urls(self) -> dict[str, str]:
        return {
            "gateway": self.gateway_url + "/metrics",
            "worker": self.worker_url + "/metrics",
            "sim": self.sim_url + "/metrics",
        }


def http(method: str, url: str, body: Any = None, *, signed: bool = False) -> tuple[int, bytes]:
    data = None if body is None else orjson.dumps(body)
    target = urllib.parse.urlsplit(url)
    path = target.path + (f"?{target.query}" if target.query else "")
    headers = (
        signed_headers(data or b"", method=method, target=path)
        if signed
        else {"Content-Type": "application/json"}
    )
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def until(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll `check` (no fixed sleeps as synchronisation); fail naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            if check():
                return
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout_s:.0f} s: {what}")
        time.sleep(0.1)


def prometheus_query(live: Live, expr: str) -> dict[str, Any]:
    url = f"{live.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http("GET", url)
    answer: dict[str, Any] = json.loads(body)
    answer["http_status"] = status
    return answer


def _prometheus_config(live_ports: dict[str, int], directory: Path) -> Path:
    jobs = {"pushgw-gateway": "gateway", "pushgw-worker": "worker", "pushgw-sim": "sim"}
    lines = [
        "global: {scrape_interval: 1s, evaluation_interval: 1s}",
        f"rule_files: [{json.dumps(str(DEPLOY / 'alerts.yml'))}]",
        "scrape_configs:",
    ]
    for job, name in jobs.items():
        lines.append(
            f"  - {{job_name: {job}, static_configs: [{{targets: ['127.0.0.1:{live_ports[name]}']}}]}}"
        )
    path = directory / "prometheus.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def live_deployment(directory: Path) -> Iterator[Live]:
    ports = {name: free_port() for name in ("sim", "gateway", "worker", "prometheus")}
    redis = RedisServer(directory / "redis")
    (directory / "redis").mkdir()
    redis.start()
    redis.fresh()  # a new deployment: its data epoch initialised
    live = Live(
        gateway_url=f"http://127.0.0.1:{ports['gateway']}",
        worker_url=f"http://127.0.0.1:{ports['worker']}",
        sim_url=f"http://127.0.0.1:{ports['sim']}",
        prometheus_url=f"http://127.0.0.1:{ports['prometheus']}",
        directory=directory,
    )
    env = {
        **os.environ,
        "PUSHGW_REDIS_URL": redis.url,
        "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
        "PUSHGW_WECHAT_BASE_URL": live.sim_url,
        "PUSHGW_WECHAT_APPID": APPID,
        "PUSHGW_WECHAT_SECRET": APP_SECRET,
        "PUSHGW_SIM_APPS": f"{APPID}:{APP_SECRET}",
        "PUSHGW_METRICS_PORT": str(ports["worker"]),
        "PUSHGW_MAX_ATTEMPTS": "2",
        "PUSHGW_RETRY_BASE_S": "0.05",
        "PUSHGW_RETRY_CAP_S": "0.2",
        "PUSHGW_SHUTDOWN_TIMEOUT_S": "5",
        "PUSHGW_LOG_LEVEL": "WARNING",
    }
    pushgw = str(Path(sys.executable).with_name("pushgw"))
    commands = {
        "sim": [pushgw, "sim", "--port", str(ports["sim"])],
        "gateway": [pushgw, "gateway", "--port", str(ports["gateway"])],
        "worker": [pushgw, "worker", "--concurrency", "8"],
        "prometheus": [
            tool("prometheus"),
            f"--config.file={_prometheus_config(ports, directory)}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        ],
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in commands.items():
            with (directory / f"{name}.log").open("wb") as log:
                processes.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
        for url in (live.sim_url + "/healthz", live.gateway_url + "/healthz", live.worker_url + "/healthz"):
            until(lambda url=url: http("GET", url)[0] == 200, url)  # type: ignore[misc]
        until(lambda: http("GET", live.prometheus_url + "/-/ready")[0] == 200, "prometheus ready")
        yield live
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        redis.stop()


def run_load(live: Live, rounds: int = 3) -> None:
    """Events through every outcome, then wait until each is final."""
    for customer_id, openid in OPENIDS.items():
        assert (
            http("PUT", f"{live.gateway_url}/v1/bindings/{customer_id}", {"openid": openid}, signed=True)[0]
            == 200
        )
    http("POST", live.sim_url + "/sim/unsubscribe", {"openid": OPENIDS["C3"]})
    http("PUT", live.sim_url + "/sim/faults", {"script": [{"errcode": -1}, {"errcode": 47003}]})
    for _ in range(rounds):
        events = [make_event(customer_id=customer_id) for customer_id in ("C1", "C2", "C3", "C4")]
        for event in events:
            status, _ = http("POST", live.gateway_url + "/v1/events", event, signed=True)
            assert status == 202
            live.event_ids.append(event["event_id"])
        http("POST", live.gateway_url + "/v1/events", events[0], signed=True)  # a duplicate
        http("POST", live.gateway_url + "/v1/events", {**events[0], "amount": 1}, signed=True)  # invalid: 422
    http("GET", live.gateway_url + "/v1/events/" + live.event_ids[0], signed=True)

    def all_final() -> bool:
        for event_id in live.event_ids:
            status, body = http("GET", f"{live.gateway_url}/v1/events/{event_id}", signed=True)
            if status != 200 or orjson.loads(body)["status"] not in FINAL:
                return False
        return True

    until(all_final, "every event final")
