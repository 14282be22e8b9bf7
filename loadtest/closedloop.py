"""The closed-loop measures wrk drives (64 connections, one thread): H against the hello server, single-event
and batch ingress against the gateway. Each ingress measure is sized by a warm-up: twice the warm-up's
request rate for the measure's seconds is written (signed just before, so within the 300 s signature
window); a file that runs out stops wrk rather than repeat a request, and is then written 3x larger once.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from loadtest import wrk
from loadtest.pinning import Pinning
from loadtest.presigned import RequestMaker
from loadtest.processes import CpuUse

CONNECTIONS = 64  # wrk's (its default in loadtest/wrk.py)
WARM_UP_S = 1.0
HEADROOM = 2.0
HELLO_REQUESTS = 2_000  # the hello server keeps no state: these are replayed over and over
WARM_UP_REQUESTS = {"single": 10_000, "batch": 300}
# requests a second written at most (memory: a single request ~0.7 KB, a batch of 100 ~27 KB)
CEILING_RPS = {"single": 40_000, "batch": 1_000}
OUTCOMES = ("queued", "digested", "rate_limited", "duplicate")  # the ingest answers' "status" fields


@dataclass(frozen=True)
class Replayed:
    """One wrk measure: events/s answered 2xx, CPU microseconds per event of each process, wrk's run."""

    rate: float
    cpu_us: dict[str, float]
    run: wrk.WrkRun
    written: int

    def summary(self) -> dict[str, object]:
        """wrk's run, the events answered 2xx, and the ingest outcomes counted (0 where none was seen)."""
        outcomes = dict.fromkeys(OUTCOMES, 0) | self.run.outcomes
        events = round(self.rate * self.run.seconds)
        return {**self.run.summary(), "outcomes": outcomes, "events": events, "written": self.written}


class Replayer:
    """Writes request files into `directory`, binds the customers they use (`bind`), runs wrk on the load
    CPU."""

    def __init__(
        self,
        maker: RequestMaker,
        directory: Path,
        pins: Pinning,
        bind: Callable[[range], Awaitable[None]],
    ) -> None:
        self._maker, self._directory, self._pins, self._bind = maker, directory, pins, bind

    def _requests(self, mode: str, count: int) -> Iterator[bytes]:
        if mode == "hello":
            return self._maker.singles(count, fresh=False)
        if mode == "batch":
            return self._maker.batches(count)
        return self._maker.singles(count)

    async def _file(self, mode: str, count: int) -> Path:
        path = self._directory / f"{mode}.requests"
        await asyncio.to_thread(wrk.write_requests, path, self._requests(mode, count))
        await self._bind(self._maker.customers.unbound())
        return path

    async def _wrk(self, url: str, path: Path, seconds: float, wrap: bool = False) -> wrk.WrkRun:
        return await asyncio.to_thread(wrk.run, url, path, seconds, wrap=wrap, cpu=self._pins.load)

    async def hello(self, url: str, seconds: float, pids: dict[str, int]) -> Replayed:
        """H: requests/s of the hello server (single-event requests, replayed)."""
        path = await self._file("hello", HELLO_REQUESTS)
        await self._wrk(url, path, WARM_UP_S, wrap=True)
        with CpuUse(pids, children="wrk") as cpu:
            run = await self._wrk(url, path, seconds, wrap=True)
        return _replayed(run, 1, cpu, HELLO_REQUESTS)

    async def _measured(
        self, url: str, mode: str, requests: int, seconds: float, pids: dict[str, int]
    ) -> tuple[wrk.WrkRun, CpuUse]:
        path = await self._file(mode, requests)
        with CpuUse(pids, children="wrk") as cpu:
            return await self._wrk(url, path, seconds), cpu

    async def size(self, url: str, mode: str, seconds: float) -> int:
        """Warm the gateway up; the requests to write for `seconds` of `mode` ("single" or "batch")."""
        warm = await self._wrk(url, await self._file(mode, WARM_UP_REQUESTS[mode]), WARM_UP_S)
        rate = CEILING_RPS[mode] if warm.exhausted else warm.requests / warm.seconds
        return math.ceil(min(CEILING_RPS[mode], HEADROOM * rate) * seconds) + 100

    async def ingress(
        self, url: str, mode: str, requests: int, seconds: float, pids: dict[str, int]
    ) -> Replayed:
        """Events/s of `mode` ingress, each request sent at most once."""
        per_request = self._maker.batch_size if mode == "batch" else 1
        run, cpu = await self._measured(url, mode, requests, seconds, pids)
        if run.exhausted:  # the warm-up's rate was far below this run's: once more, 3x the requests
            requests = min(3 * requests, math.ceil(CEILING_RPS[mode] * seconds))
            run, cpu = await self._measured(url, mode, requests, seconds, pids)
        if run.exhausted:
            sys.stderr.write(f"warning: {mode}: wrk ran out of requests; its rate is understated\n")
        if run.ok + run.non_2xx < CONNECTIONS:
            sys.stderr.write(
                f"warning: {mode}: fewer answers than connections: an answer took most of the run\n"
            )
        return _replayed(run, per_request, cpu, requests)


def _replayed(run: wrk.WrkRun, per_request: int, cpu: CpuUse, written: int) -> Replayed:
    events = run.ok * per_request
    return Replayed(events / run.seconds, cpu.per_event_us(events), run, written)
