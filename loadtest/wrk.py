"""Drive a server with wrk (one thread, 64 connections): requests built and signed beforehand, written to a
file, each sent at most once by loadtest/lua/replay.lua, which counts the answers and prints one JSON line.

A Python load generator spends ~160 us of CPU a request and so capped the baselines it drove; wrk spends a
few. Pre-signing keeps the request as the gateway sees it in production (RFC 9421, a fresh nonce and event id
each) at no cost during the measurement: a signature's `created` must be within 300 s of the server's clock,
so a file is written for one measurement and used at once.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from loadtest.pinning import on_cpu

SCRIPT = Path(__file__).with_name("lua") / "replay.lua"
MARKER = "wrk-json "
MISSING = (
    "pushgw bench: wrk not found on PATH; install it: apt-get install wrk (Debian/Ubuntu) or "
    "brew install wrk (macOS)"
)


class WrkFailed(RuntimeError):
    """wrk exited with an error or without the script's JSON line."""


def binary() -> str | None:
    """The wrk executable on PATH, None where it is not installed."""
    return shutil.which("wrk")


def raw_request(target: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 POST as it goes on the wire. Host is not a signed component, so any value does."""
    lines = [f"POST {target} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def write_requests(path: Path, requests: Iterable[bytes]) -> int:
    """Write `requests` as replay.lua reads them ("<length>\\n<bytes>" each); returns how many."""
    written = 0
    with path.open("wb") as out:
        for request in requests:
            out.write(b"%d\n" % len(request))
            out.write(request)
            written += 1
    return written


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run did: answers by HTTP status, JSON "status" fields by value, wrk's latency."""

    requests: int
    seconds: float
    exhausted: bool
    latency_ms: dict[str, float]
    errors: dict[str, int]
    statuses: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        """Answers with a 2xx status."""
        return sum(n for code, n in self.statuses.items() if code.startswith("2"))

    @property
    def non_2xx(self) -> int:
        """Answers with another status, and requests that got no answer (socket errors, timeouts)."""
        return sum(n for code, n in self.statuses.items() if not code.startswith("2")) + sum(
            self.errors.values()
        )

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "seconds": self.seconds,
            "exhausted": self.exhausted,
            "latency_ms": self.latency_ms,
            "errors": self.errors,
            "statuses": self.statuses,
            "outcomes": self.outcomes,
            "non_2xx": self.non_2xx,
        }


def parse(stdout: str) -> WrkRun:
    """The run from wrk's output: the script's one JSON line (wrk's own text around it is ignored)."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            got = orjson.loads(line.removeprefix(MARKER))
            return WrkRun(
                requests=int(got["requests"]),
                seconds=got["duration_us"] / 1e6,
                exhausted=got["exhausted"] > 0,
                latency_ms={name: us / 1000 for name, us in got["latency_us"].items()},
                errors={name: int(n) for name, n in got["errors"].items()},
                statuses={str(code): int(n) for code, n in got["statuses"].items()},
                outcomes={str(name): int(n) for name, n in got["outcomes"].items()},
            )
    raise WrkFailed("wrk printed no result line")


def command(url: str, requests_file: Path, seconds: float, *, wrap: bool, connections: int = 64) -> list[str]:
    """The wrk command line: one thread, `connections` connections, whole seconds (wrk's -d unit)."""
    wrk = binary()
    if wrk is None:
        raise WrkFailed(MISSING)
    duration = f"{max(1, math.ceil(seconds))}s"
    args = [wrk, "-t1", f"-c{connections}", f"-d{duration}", "--timeout", "10s", "-s", str(SCRIPT), url]
    return [*args, "--", str(requests_file), "wrap" if wrap else "once", "1"]


def run(
    url: str, requests_file: Path, seconds: float, *, wrap: bool = False, cpu: int | None = None
) -> WrkRun:
    """Run wrk against `url` (on `cpu` when given) and return what it did. Raises WrkFailed."""
    done = subprocess.run(
        on_cpu(cpu, command(url, requests_file, seconds, wrap=wrap)),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse(done.stdout)
