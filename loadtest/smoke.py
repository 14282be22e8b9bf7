"""`make loadtest-smoke`: a short headless Locust run against a private `pushgw dev` stack on free ports.

Starts `pushgw dev`, waits for its ingress, runs Locust (SteadyUser + E2EUser unless user classes are
given) with CSV and HTML reports in build/loadtest/, stops the stack and exits with Locust's exit code: the
locustfile's policy (failure ratio, p99, exceptions), which Locust prints with its figures, pass or fail.
`dev_stack()` is the same private stack for the tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from gateway.core.local_servers import free_port

REPORTS = Path("build/loadtest")


def _wait_ready(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback stack
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"loadtest-smoke: {url} did not answer within {timeout_s:.0f} s")


@dataclass(frozen=True)
class DevStack:
    host: str  # the gateway's ingress
    sim_url: str  # the WeChat simulator


@contextmanager
def dev_stack(env: dict[str, str] | None = None) -> Iterator[DevStack]:
    """A `pushgw dev` stack (embedded Redis, gateway, worker, simulator) on free loopback ports; stopped on
    exit."""
    port, sim_port = free_port(), free_port()
    stack = DevStack(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sim_port}")
    pushgw = [sys.executable, "-c", "from gateway.cli import main; main()"]
    dev = subprocess.Popen(
        [*pushgw, "dev", "--port", str(port), "--sim-port", str(sim_port)],
        env={**os.environ, "PUSHGW_LOG_LEVEL": "WARNING", **(env or {})},
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_ready(f"{stack.host}/readyz")
        yield stack
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dev.kill()


def locust_command(host: str, reports: Path, users: int, spawn_rate: float, run_time: str) -> list[str]:
    """The headless Locust command line (also what the README shows)."""
    return [
        sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--headless",
        "-u", str(users), "-r", str(spawn_rate), "-t", run_time, "--host", host,
        "--csv", str(reports / "smoke"), "--html", str(reports / "smoke.html"), "--only-summary",
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-u", "--users", type=int, default=20)
    parser.add_argument("-r", "--spawn-rate", type=float, default=10)
    parser.add_argument("-t", "--run-time", default="20s")
    parser.add_argument("user_classes", nargs="*", default=["SteadyUser", "E2EUser"])
    args = parser.parse_args()
    REPORTS.mkdir(parents=True, exist_ok=True)
    with dev_stack() as stack:
        env = {**os.environ, "PUSHGW_LOCUST_SIM_URL": stack.sim_url}
        command = locust_command(stack.host, REPORTS, args.users, args.spawn_rate, args.run_time)
        code = subprocess.run([*command, *args.user_classes], env=env, check=False).returncode
    sys.stdout.write(f"reports: {REPORTS}/smoke_stats.csv, {REPORTS}/smoke.html (exit {code})\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
