"""`pushgw bench`: start what it needs, measure ingress and delivery beside their baselines, print a table.

Every figure that matters is a ratio against a baseline measured in the same run on the same cores:
  H    bare aiohttp hello-world, requests/s       -> single-event and batch ingress are read against it
       (all three driven by wrk replaying pre-signed requests, loadtest/wrk.py: not by a Python generator,
       which spent more CPU per request than the server it measured)
  C    bare aiohttp client sending template messages to the simulator -> worker delivery is read against it
  SIM  the simulator driven by two client processes (its own ceiling: C and delivery cannot pass it)
  XADD redis-benchmark XADD, pipelined 64 deep, on the bench's Redis (appendfsync always): the queue's ceiling
The pipeline's maximum is measured with every process running at once (on shared cores the stages' maxima
measured alone do not add up): an open loop ramping past the narrower stage's maximum, reading where the
deliveries level off. End-to-end latency is measured open loop (loadtest/openloop.py) at 50% of that maximum
(the target's reading) and at 70% (the full run also at 35% of it and at 70% of the narrower stage alone),
from the event's accepted time to its delivered time (both Redis TIME); the open-loop generator reports how
late it sent. Every measure runs on the gateway's default settings (rate limit included): each customer gets
at most the limit's count of events in a run (loadtest/presigned.py). With 2 CPUs or more, the process
under test runs on one CPU and its load, Redis and the simulator on another (loadtest/pinning.py).
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.archive.server import running_postgres
from gateway.core.local_servers import free_port
from gateway.core.redis import init_epoch
from gateway.core.settings import Settings
from loadtest import archive_bench
from loadtest.closedloop import OUTCOMES, Replayed, Replayer
from loadtest.openloop import schedule
from loadtest.payloads import customer_id, openid_of
from loadtest.pinning import Pinning, on_cpu
from loadtest.presigned import Customers, RequestMaker
from loadtest.processes import (
    PUSHGW,
    CpuUse,
    Profiles,
    profiled,
    redis_server,
    rss_mib,
    server_process,
)
from loadtest.report import Row, percentile, table

__all__ = ["PUSHGW", "redis_server", "server_process"]  # loadtest/scaling.py starts its processes with these

KEY_ID, SECRET = "bench", "bench-secret"
APPID, APP_SECRET = "wx_bench_app", "bench_app_secret"
CUSTOMERS = 1000  # the bare client's (C) distinct openids
WORKER_CONCURRENCY = 256  # the default: deliveries wait on WeChat and Redis fsyncs, not on the CPU
WARM_UP_SAMPLES = 6  # soak RSS samples are 10 s apart: the first minute is warm-up
E2E_TARGET_SHARE = 0.5  # the latency target is read at this share of the pipeline max
E2E_SHARE = 0.7  # reported too, and the soak's load
ARCHIVE_BACKLOG_ROWS = 30_000  # the archive drain measure's backlog
BIND_CHUNK = 10_000  # bindings written per pipeline
E2E_RUNS = {
    "e2e_at_50": "50% pipeline max",
    "e2e_at_pipeline": "70% pipeline max",
    "e2e_at_35": "35% pipeline max",
    "e2e_at_stages": "70% narrower stage max",
}
E2E_TARGET_RUN = "e2e_at_50"
WRK_MEASURES = ("H", "single", "single_uncoalesced", "batch")
# (measure, process) of the CPU-per-event rows; "wrk" drives H and ingress, "loadgen" is the bare client (C)
CPU_ROWS = [
    ("H", "hello"),
    ("H", "wrk"),
    ("single", "gateway"),
    ("single", "redis"),
    ("single", "wrk"),
    ("batch", "gateway"),
    ("batch", "redis"),
    ("batch", "wrk"),
    ("C", "loadgen"),
    ("C", "sim"),
    ("delivery", "worker"),
    ("delivery", "redis"),
    ("delivery", "sim"),
]
# the product process read against its baseline's: (measure, process) -> (measure, process, name)
CPU_BASELINES = {
    ("single", "gateway"): ("H", "hello", "hello"),
    ("batch", "gateway"): ("H", "hello", "hello"),
    ("delivery", "worker"): ("C", "loadgen", "client"),
}
# the floors of the target column (ratios of the product figure to its baseline)
TARGETS = {"single": 0.40, "batch": 1.50, "delivery": 0.55}


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs and how often the rounds repeat. wrk measures whole seconds."""

    seconds: float
    rounds: int
    e2e_seconds: float
    drain_s: float
    quick: bool
    soak_s: float = 0.0
    profiles: Profiles = Profiles()  # noqa: RUF009 - Profiles is frozen

    @classmethod
    def make(
        cls,
        quick: bool,
        soak_s: float = 0.0,
        profile_dir: str | None = None,
        flamegraph_dir: str | None = None,
    ) -> Plan:
        profiles = Profiles(
            Path(profile_dir) if profile_dir else None, Path(flamegraph_dir) if flamegraph_dir else None
        )
        if quick:
            return cls(3.0, 1, 4.0, 10.0, True, soak_s, profiles)
        return cls(6.0, 3, 8.0, 20.0, False, soak_s, profiles)


@dataclass(frozen=True)
class Stack:
    """What every measure of a run shares: the gateway's environment, Redis and the simulator, their pids,
    where each process runs, and the request files' writer (which hands out the customers)."""

    env: dict[str, str]
    redis_url: str
    sim_url: str
    token: str
    pids: dict[str, int]
    pins: Pinning
    customers: Customers
    replayer: Replayer

    @property
    def urls(self) -> tuple[str, str]:
        return self.redis_url, self.sim_url


def _load_args(url: str, mode: str, seconds: float, connections: int, extra: dict[str, str]) -> list[str]:
    args = [sys.executable, "-m", "loadtest.loadgen", "--url", url, "--mode", mode, "--seconds", str(seconds)]
    args += ["--connections", str(connections), "--key-id", KEY_ID, "--secret", SECRET]
    args += ["--customers", str(CUSTOMERS)]
    for name, value in extra.items():
        args += [f"--{name.replace('_', '-')}", value]
    return args


def run_load(
    url: str, mode: str, seconds: float, connections: int = 64, cpu: int | None = None, **extra: str
) -> dict[str, Any]:
    """Run the closed-loop Python load generator process (on `cpu` when given) and return its tally."""
    command = on_cpu(cpu, _load_args(url, mode, seconds, connections, extra))
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    tally: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return tally


async def _load_parallel(
    url: str, mode: str, seconds: float, processes: int, cpu: int | None, **extra: str
) -> float:
    """Events/s of `processes` load generators together (the simulator's own capacity)."""
    tallies = await asyncio.gather(
        *(
            asyncio.to_thread(run_load, url, mode, seconds, 64, cpu, seed=str(i + 11), **extra)
            for i in range(processes)
        )
    )
    return sum(rate_of(tally) for tally in tallies)


def rate_of(tally: dict[str, Any]) -> float:
    return float(tally["events"]) / float(tally["seconds"])


def gateway_env(redis_url: str, sim_url: str) -> dict[str, str]:
    """The environment of every pushgw process of the bench: the product's defaults (the per-customer rate
    limit and its policy included) but for where things are, quiet logs and a simulator quota that lasts."""
    return {
        "PUSHGW_REDIS_URL": redis_url,
        "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
        "PUSHGW_WECHAT_BASE_URL": sim_url,
        "PUSHGW_WECHAT_APPID": APPID,
        "PUSHGW_WECHAT_SECRET": APP_SECRET,
        "PUSHGW_LOG_LEVEL": "WARNING",
        "PUSHGW_METRICS_PORT": "0",
        "PUSHGW_SIM_APPS": f"{APPID}:{APP_SECRET}",
        "PUSHGW_SIM_DAILY_QUOTA": "100000000",
        "PUSHGW_WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
        "PUSHGW_DRAIN_GRACE_S": "0",  # no load balancer to tell: stop at once between measures
    }


@asynccontextmanager
async def _gateway(
    env: dict[str, str], coalesce: bool = True, cpu: int | None = None
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PUSHGW_INGEST_COALESCE": "true" if coalesce else "false"}
    command = [*PUSHGW, "gateway", "--port", str(port)]
    async with server_process(command, env, url + "/healthz", cpu) as process:
        yield url, process


Measured = tuple[float, dict[str, float]]
"""events/s, and CPU microseconds per event of each process involved"""


def _measured_load(
    url: str, mode: str, seconds: float, pids: dict[str, int], cpu: int | None, **extra: str
) -> Measured:
    with CpuUse(pids) as spent:
        tally = run_load(url, mode, seconds, 64, cpu, **extra)
    return rate_of(tally), spent.per_event_us(float(tally["events"]))


async def _measure_ingress(plan: Plan, stack: Stack, coalesce: bool, mode: str) -> Replayed:
    """Single-event or batch ingress driven by wrk, the gateway on the product CPU."""
    async with _gateway(stack.env, coalesce, stack.pins.product) as (url, process):
        requests = await stack.replayer.size(url, mode, plan.seconds)
        pids = {"gateway": process.pid, "redis": stack.pids["redis"]}
        async with profiled(plan.profiles, process, f"gateway-{mode}" + ("" if coalesce else "-uncoalesced")):
            return await stack.replayer.ingress(url, mode, requests, plan.seconds, pids)


async def _measure_hello(plan: Plan, stack: Stack) -> Replayed:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "loadtest.hello", "--port", str(port)]
    async with server_process(command, {}, url + "/", stack.pins.product) as process:
        return await stack.replayer.hello(url, plan.seconds, {"hello": process.pid})


async def _sim_token(sim_url: str) -> str:
    body = {"grant_type": "client_credential", "appid": APPID, "secret": APP_SECRET, "force_refresh": False}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim_url}/cgi-bin/stable_token", json=body) as r,
    ):
        return str((await r.json())["access_token"])


async def sim_delivered(session: aiohttp.ClientSession, sim_url: str) -> int:
    async with session.get(f"{sim_url}/sim/stats") as response:
        return int((await response.json())["delivered"])


async def _measure_delivery(plan: Plan, stack: Stack) -> Measured:
    """Events/s a worker (on the product CPU) delivers from a backlog (the stream filled by the ingress
    runs)."""
    redis = Redis.from_url(stack.redis_url, decode_responses=True)
    backlog = int(await redis.xlen(keys.stream(0)))
    await redis.aclose()
    sim_url = stack.sim_url
    async with aiohttp.ClientSession() as session:
        before = await sim_delivered(session, sim_url)
        command = [*PUSHGW, "worker"]
        async with server_process(command, stack.env, sim_url + "/healthz", stack.pins.product) as worker:
            await asyncio.sleep(1.0)  # start-up and token fetch are not throughput
            start_count, started = await sim_delivered(session, sim_url), time.monotonic()
            async with profiled(plan.profiles, worker, "worker"):
                with CpuUse({"worker": worker.pid, **stack.pids}) as cpu:
                    await asyncio.sleep(plan.seconds)
                    done = await sim_delivered(session, sim_url)
            elapsed = time.monotonic() - started
    if done - before >= backlog:
        sys.stderr.write("warning: the backlog ran out during the delivery measurement\n")
    return (done - start_count) / elapsed, cpu.per_event_us(done - start_count)


def _xadd_redis_benchmark(redis_url: str, seconds: float, cpu: int | None) -> float | None:
    """XADD ops/s from redis-benchmark (on `cpu` when given), 64 commands a pipeline, 16 clients; None if it
    is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    requests = str(int(60_000 * seconds))
    command = [binary, "-p", port, "-c", "16", "-P", "64", "-n", requests, "-q", "--csv"]
    command += ["XADD", "bench:xadd", "MAXLEN", "~", "100000", "*", "ev", "x" * 300]
    out = subprocess.run(on_cpu(cpu, command), check=True, capture_output=True, text=True).stdout
    # --csv: a header line, then "test","rps",...
    for line in out.splitlines():
        cells = [cell.strip('"') for cell in line.split(",")]
        if len(cells) > 1 and cells[0].upper().startswith("XADD"):
            return float(cells[1])
    return None


async def _xadd_python(redis_url: str, seconds: float) -> float:
    """XADD ops/s from redis-py (hiredis), 1000 commands a pipeline: the fallback without redis-benchmark."""
    redis = Redis.from_url(redis_url)
    done, stop_at = 0, time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < stop_at:
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(1000):
                pipe.xadd("bench:xadd", {"ev": "x" * 300}, maxlen=100_000, approximate=True)
            await pipe.execute()
        done += 1000
    elapsed = time.monotonic() - started
    await redis.delete("bench:xadd")
    await redis.aclose()
    return done / elapsed


async def _measure_xadd(redis_url: str, seconds: float, cpu: int | None) -> float:
    rate = await asyncio.to_thread(_xadd_redis_benchmark, redis_url, seconds, cpu)
    if rate is None:
        rate = await _xadd_python(redis_url, seconds)
    redis = Redis.from_url(redis_url)
    await redis.delete("bench:xadd")
    await redis.aclose()
    return rate


async def _redis_pid(redis_url: str) -> int:
    redis = Redis.from_url(redis_url)
    pid = int((await redis.info("server"))["process_id"])
    await redis.aclose()
    return pid


async def _bind_customers(redis_url: str, customers: range) -> None:
    """Bind `customers` (indexes) to their openids, pipelined `BIND_CHUNK` at a time."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    for first in range(customers.start, customers.stop, BIND_CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for index in range(first, min(first + BIND_CHUNK, customers.stop)):
                pipe.hset(
                    keys.binding(customer_id(index)), mapping={"openid": openid_of(index), "status": "active"}
                )
            await pipe.execute()
    await redis.aclose()


async def _fresh_queue(stack: Stack) -> None:
    """Empty Redis (the ingress runs left a backlog that would sit in front of the timed events) and
    initialise its data epoch again (no process runs on it now); customers are bound afresh as handed out."""
    redis = Redis.from_url(stack.redis_url)
    await redis.flushdb()
    await init_epoch(redis, 1)
    await redis.aclose()
    stack.customers.forget_bindings()


async def _statuses(redis_url: str, sent: list[list[Any]], drain_s: float) -> dict[str, list[str | None]]:
    """event id -> [status, accepted_ms, delivered_ms] once every event is final or `drain_s` passed."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    waiting = {row[0]: keys.event(keys.shard_of(row[1], 1), KEY_ID, row[0]) for row in sent if row[4] == 202}
    found: dict[str, list[str | None]] = {}
    deadline = time.monotonic() + drain_s
    while waiting:
        async with redis.pipeline(transaction=False) as pipe:
            for key in waiting.values():
                pipe.hmget(key, "status", "accepted_ms", "delivered_ms")
            answers = await pipe.execute()
        for event_id, answer in zip(list(waiting), answers, strict=True):
            found[event_id] = answer
            if answer[0] in ("delivered", "failed", "dead_lettered", "no_binding"):
                del waiting[event_id]
        if not waiting or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    await redis.aclose()
    return found


def latency_summary(sent: list[list[Any]], found: dict[str, list[str | None]]) -> dict[str, Any]:
    """Percentiles (ms) of accepted -> delivered and intended send -> delivered; an event not delivered by
    the end of the drain counts as never (inf), so it cannot hide in the percentiles. Events not accepted
    are counted by HTTP status (0: no answer) instead: a refusal is not a latency."""
    accepted_to_delivered: list[float] = []
    sent_to_delivered: list[float] = []
    answers = [float(row[3]) for row in sent]
    for event_id, _, intended_ms, _, http_status in sent:
        if http_status != 202:
            continue
        status, accepted_ms, delivered_ms = found.get(event_id, [None, None, None])
        if status == "delivered" and accepted_ms and delivered_ms:
            accepted_to_delivered.append(float(int(delivered_ms) - int(accepted_ms)))
            sent_to_delivered.append(max(0.0, int(delivered_ms) - float(intended_ms)))
        else:
            accepted_to_delivered.append(float("inf"))
            sent_to_delivered.append(float("inf"))
    return {
        "events": float(len(sent)),
        "accepted": float(sum(1 for row in sent if row[4] == 202)),
        "delivered": float(sum(1 for value in accepted_to_delivered if value != float("inf"))),
        "p50_ms": percentile(accepted_to_delivered, 0.50),
        "p99_ms": percentile(accepted_to_delivered, 0.99),
        "p999_ms": percentile(accepted_to_delivered, 0.999),
        "sent_p50_ms": percentile(sent_to_delivered, 0.50),
        "sent_p99_ms": percentile(sent_to_delivered, 0.99),
        "answer_p99_ms": percentile(answers, 0.99),
        "statuses": dict(Counter(str(row[4]) for row in sent)),
    }


async def _sample_rss(processes: dict[str, subprocess.Popen[bytes]], every_s: float, into: list[Any]) -> None:
    while True:
        into.append({name: rss_mib(process.pid) for name, process in processes.items()})
        await asyncio.sleep(every_s)


@dataclass(frozen=True)
class OpenLoop:
    """What an open-loop run through the whole pipeline left: each event sent, its record, RSS samples."""

    result: dict[str, Any]
    found: dict[str, list[str | None]]
    rss_mib: list[dict[str, float]]


def _openloop_command(
    url: str, rate: float, seconds: float, rate_to: float | None, customers: tuple[int, int]
) -> list[str]:
    """The open-loop generator's command line; `customers`: the first customer, and events per customer."""
    command = [sys.executable, "-m", "loadtest.openloop", "--url", url, "--rate", f"{rate:.0f}"]
    command += ["--seconds", str(seconds), "--key-id", KEY_ID, "--secret", SECRET]
    command += ["--first-customer", str(customers[0]), "--per-customer", str(customers[1])]
    return command + ([] if rate_to is None else ["--rate-to", f"{rate_to:.0f}"])


async def _open_loop(
    stack: Stack, rate: float, seconds: float, drain_s: float, rate_to: float | None = None
) -> OpenLoop:
    """Open-loop events at `rate`/s (ramping to `rate_to`) for `seconds` through gateway, Redis, worker
    and simulator, all running at once (gateway and worker on the product CPU, the generator beside Redis
    and the simulator); then up to `drain_s` for the events to reach a final state."""
    await _fresh_queue(stack)
    # the generator's schedule, to hand out (and bind) enough customers for its events
    first = stack.customers.take(len(schedule(rate, seconds, rate_to)))
    await _bind_customers(stack.redis_url, stack.customers.unbound())
    rss: list[dict[str, float]] = []
    cpu, sim_url = stack.pins.product, stack.sim_url
    async with server_process([*PUSHGW, "worker"], stack.env, sim_url + "/healthz", cpu) as worker:
        await asyncio.sleep(1.0)  # the worker made its group and fetched a token
        async with _gateway(stack.env, cpu=cpu) as (url, gateway):
            sampler = asyncio.create_task(_sample_rss({"gateway": gateway, "worker": worker}, 10.0, rss))
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "open.json"
                who = (first, stack.customers.per_customer)
                command = [*_openloop_command(url, rate, seconds, rate_to, who), "--out", str(out)]
                await asyncio.to_thread(subprocess.run, on_cpu(stack.pins.load, command), check=True)
                result = orjson.loads(out.read_bytes())
            found = await _statuses(stack.redis_url, result["events"], drain_s)
            sampler.cancel()
            rss.append({"gateway": rss_mib(gateway.pid), "worker": rss_mib(worker.pid)})
    return OpenLoop(result, found, rss)


async def _measure_e2e(stack: Stack, rate: float, seconds: float, drain_s: float) -> dict[str, Any]:
    """Latency percentiles of open-loop events at a constant `rate`/s, and how late the generator sent."""
    run = await _open_loop(stack, rate, seconds, drain_s)
    summary: dict[str, Any] = latency_summary(run.result["events"], run.found)
    summary.update(rate=rate, seconds=seconds)
    summary.update({name: run.result[name] for name in ("sender_late_p99_ms", "sender_late_max_ms")})
    summary["rss_mib"] = run.rss_mib
    return summary


async def _measure_pipeline_max(plan: Plan, stack: Stack, ceiling: float) -> float:
    """Events/s the whole pipeline delivers with every process running at once: an open loop ramping
    from 20% to 120% of `ceiling` (the narrower stage measured alone); once the offered rate passes what
    the pipeline sustains, deliveries level off there. Only deliveries while events were still being sent
    count (in the drain after it the gateway is idle and the worker has the CPU to itself)."""
    run = await _open_loop(stack, 0.2 * ceiling, plan.e2e_seconds, drain_s=0.0, rate_to=1.2 * ceiling)
    events = run.result["events"]
    sending_ended_ms = max(row[2] for row in events) if events else 0.0
    delivered_ms = [
        int(found[2])
        for found in run.found.values()
        if found[0] == "delivered" and found[2] is not None and int(found[2]) <= sending_ended_ms
    ]
    return busiest_second(delivered_ms)


def busiest_second(times_ms: list[int]) -> float:
    """The most of `times_ms` that fall within any one second."""
    ordered = sorted(times_ms)
    most, first = 0, 0
    for last, at in enumerate(ordered):
        while at - ordered[first] >= 1000:
            first += 1
        most = max(most, last - first + 1)
    return float(most)


async def _closed_loops(plan: Plan, stack: Stack) -> dict[str, Any]:
    """The stages alone, each baseline right beside the product figure read against it: H, single and batch
    ingress (wrk), C and delivery; rates, CPU per event, and what wrk saw (statuses, outcomes)."""
    replayed = {"H": await _measure_hello(plan, stack)}
    replayed["single"] = await _measure_ingress(plan, stack, True, "single")
    if not plan.quick:
        replayed["single_uncoalesced"] = await _measure_ingress(plan, stack, False, "single")
    replayed["batch"] = await _measure_ingress(plan, stack, True, "batch")
    measured: dict[str, Measured] = {name: (got.rate, got.cpu_us) for name, got in replayed.items()}
    sim_pid = {"sim": stack.pids["sim"]}
    measured["C"] = await asyncio.to_thread(
        _measured_load,
        stack.sim_url,
        "template",
        plan.seconds,
        sim_pid,
        stack.pins.product,
        token=stack.token,
    )
    measured["delivery"] = await _measure_delivery(plan, stack)
    got: dict[str, Any] = {name: rate for name, (rate, _) in measured.items()}
    got["cpu_us"] = {name: cpu for name, (_, cpu) in measured.items()}
    got["wrk"] = {name: run.summary() for name, run in replayed.items()}
    return got


async def _round(
    plan: Plan, stack: Stack, archive_url: str | None, measure_verify_us: Callable[[], float]
) -> dict[str, Any]:
    """One A/B round: the stages alone, then the pipeline with every process running at once.
    `measure_verify_us`: the CPU of the gateway's signature check per request (given by the CLI: loadtest
    never imports the ingress)."""
    got = await _closed_loops(plan, stack)
    if archive_url:  # before the open loops, which empty Redis: it delivers the backlog the ingress left
        got["archive"] = await _measure_archive(plan, stack, archive_url)
    got["XADD"] = await _measure_xadd(stack.redis_url, min(plan.seconds, 2.0), stack.pins.product)
    got["verify_us"] = measure_verify_us()
    # two client processes share a CPU against the simulator, so the larger of the two runs is its floor
    two = await _load_parallel(
        stack.sim_url, "template", plan.seconds, 2, stack.pins.product, token=stack.token
    )
    got["SIM"] = max(got["C"], two)
    got["stages_max"] = min(got["single"], got["delivery"])
    got["pipeline_max"] = await _measure_pipeline_max(plan, stack, got["stages_max"])
    shares = {"e2e_at_50": E2E_TARGET_SHARE, "e2e_at_pipeline": E2E_SHARE}
    if not plan.quick:  # where else does the latency target hold? lower; and at 70% of a stage alone
        shares["e2e_at_35"] = E2E_SHARE / 2
    for run, share in shares.items():
        got[run] = await _measure_e2e(stack, share * got["pipeline_max"], plan.e2e_seconds, plan.drain_s)
    if not plan.quick:
        rate = E2E_SHARE * got["stages_max"]
        got["e2e_at_stages"] = await _measure_e2e(stack, rate, plan.e2e_seconds, plan.drain_s)
    return got


async def _stack(plan: Plan, tmp: Path, redis_url: str, sim: tuple[str, int], pins: Pinning) -> Stack:
    """The run's shared parts once Redis and the simulator are up. Each customer is given at most the
    gateway's per-customer limit of events in a run (the limit the gateway reads from the same variables)."""
    env = gateway_env(redis_url, sim[0])
    per_customer = Settings.from_env({**os.environ, **env}).rate_limit.count
    customers = Customers(per_customer)
    (tmp / "requests").mkdir()

    async def bind(todo: range) -> None:
        await _bind_customers(redis_url, todo)

    replayer = Replayer(RequestMaker(KEY_ID, SECRET, customers), tmp / "requests", pins, bind)
    pids = {"redis": await _redis_pid(redis_url), "sim": sim[1]}
    token = await _sim_token(sim[0])
    return Stack(env, redis_url, sim[0], token, pids, pins, customers, replayer)


async def run_bench(
    measure_verify_us: Callable[[], float],
    quick: bool = False,
    json_path: str | None = None,
    soak_s: float = 0.0,
    profile_dir: str | None = None,
    flamegraph_dir: str | None = None,
) -> dict[str, Any]:
    plan = Plan.make(quick, soak_s, profile_dir, flamegraph_dir)
    pins = Pinning.detect()
    rounds: list[dict[str, Any]] = []
    soak: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="pushgw-bench-") as tmp,
        running_postgres() as archive,
    ):
        if archive is not None:
            await archive_bench.migrated(archive)
        async with redis_server(Path(tmp), pins.load) as redis_url:
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim_command = [*PUSHGW, "sim", "--port", str(sim_port)]
            env = gateway_env(redis_url, sim_url)
            async with server_process(sim_command, env, sim_url + "/healthz", pins.load) as sim:
                stack = await _stack(plan, Path(tmp), redis_url, (sim_url, sim.pid), pins)
                for _ in range(plan.rounds):  # A/B rounds: baseline and product alternate on the same cores
                    rounds.append(await _round(plan, stack, archive, measure_verify_us))
                if plan.soak_s > 0:
                    rate = statistics.median(r["e2e_at_pipeline"]["rate"] for r in rounds)
                    soak = await _measure_e2e(stack, rate, plan.soak_s, 60.0)
    report = summarise(rounds, soak, plan, pins)
    sys.stdout.write(render(report) + "\n")
    if json_path:
        Path(json_path).write_bytes(
            orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        )
    return report


def _median(rounds: list[dict[str, Any]], path: str) -> float:
    values = []
    for got in rounds:
        value: Any = got
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            values.append(float(value))
    return statistics.median(values) if values else float("nan")


WRK_FIGURES = ("events", "non_2xx", "latency_ms.p99", *(f"outcomes.{name}" for name in OUTCOMES))
E2E_FIGURES = (
    *("rate", "p50_ms", "p99_ms", "p999_ms", "sent_p99_ms", "answer_p99_ms", "events", "accepted"),
    *("delivered", "sender_late_p99_ms", "sender_late_max_ms"),
)


def summarise(
    rounds: list[dict[str, Any]], soak: dict[str, Any] | None, plan: Plan, pins: Pinning | None = None
) -> dict[str, Any]:
    """Medians over the rounds of every figure (the JSON report; `render` prints it)."""
    names = ["H", "single", "single_uncoalesced", "batch", "XADD", "C", "SIM", "delivery", "stages_max"]
    names += ["pipeline_max", "verify_us", "archive.delivery", "archive.rows", "archive.drain"]
    names += [f"cpu_us.{measure}.{process}" for measure, process in CPU_ROWS]
    names += [f"wrk.{measure}.{figure}" for measure in WRK_MEASURES for figure in WRK_FIGURES]
    names += [f"{run}.{figure}" for run in E2E_RUNS for figure in E2E_FIGURES]
    medians = {name: _median(rounds, name) for name in names}
    rss = [rounds[-1]["e2e_at_pipeline"]["rss_mib"][0], rounds[-1]["e2e_at_pipeline"]["rss_mib"][-1]]
    warm_rss = None
    if soak is not None:
        rss = [soak["rss_mib"][0], soak["rss_mib"][-1]]
        # start-up and warm-up (connection buffers, the first waves of requests) are not a leak: compare the
        # end with the sample after the warm-up too
        samples = soak["rss_mib"]
        warm_rss = [samples[min(WARM_UP_SAMPLES, len(samples) - 1)], samples[-1]]
    return {
        "mode": "quick" if plan.quick else "full",
        "rounds": len(rounds),
        "cores": os.cpu_count(),
        "seconds_per_measure": plan.seconds,
        "pinning": (pins or Pinning(None, None)).describe(),
        "medians": medians,
        "rss_mib_start_end": rss,
        "rss_mib_warm_end": warm_rss,
        "soak": soak and {k: v for k, v in soak.items() if k != "rss_mib"} | {"rss_mib": soak["rss_mib"]},
        "per_round": [{k: v for k, v in got.items() if not k.startswith("e2e")} for got in rounds],
        "e2e_per_round": [
            {run: {k: v for k, v in got[run].items() if k != "rss_mib"} for run in E2E_RUNS if run in got}
            for got in rounds
        ],
    }


def _target(measure: str) -> str:
    return f">= {TARGETS[measure]:.2f}"


def rows(report: dict[str, Any]) -> list[Row]:
    """The table's rows from a report: baselines first, then each product figure with its ratio."""
    m = report["medians"]
    out = [
        Row("H: bare aiohttp hello-world", m["H"], "req/s"),
        *_wrk_rows(m, "H"),
        Row("C: bare aiohttp client -> simulator", m["C"], "msg/s", m["C"] / m["SIM"], "SIM"),
        Row("SIM: simulator capacity (2 client procs)", m["SIM"], "msg/s"),
        Row("XADD: redis-benchmark, pipelined x64", m["XADD"], "ops/s"),
        Row(
            "single-event ingress",
            m["single"],
            "events/s",
            m["single"] / m["H"],
            "H",
            _target("single"),
        ),
        *_wrk_rows(m, "single"),
    ]
    uncoalesced = m["single_uncoalesced"]
    if not math.isnan(uncoalesced):  # measured in full runs
        out.append(
            Row(
                "  same, one Redis round trip per request", uncoalesced, "events/s", uncoalesced / m["H"], "H"
            )
        )
    batch, delivery = m["batch"], m["delivery"]
    out += [
        Row("batch ingress (100 per request)", batch, "events/s", batch / m["H"], "H", _target("batch")),
        *_wrk_rows(m, "batch"),
        Row("  batch ingress against the queue ceiling", batch, "events/s", batch / m["XADD"], "XADD"),
        Row(
            f"worker delivery (1 process, concurrency {WORKER_CONCURRENCY})",
            delivery,
            "events/s",
            delivery / m["C"],
            "C",
            _target("delivery"),
        ),
        *_archive_rows(m),
        Row("narrower stage alone: min(single, delivery)", m["stages_max"], "events/s"),
        Row(
            "pipeline max, every process at once",
            m["pipeline_max"],
            "events/s",
            m["pipeline_max"] / m["stages_max"],
            "stage",
        ),
    ]
    return out + _cpu_rows(m) + _all_e2e_rows(report) + _rss_rows(report)


def _wrk_rows(m: dict[str, float], measure: str) -> list[Row]:
    """What wrk saw beside a closed-loop rate: answers that were not 2xx, the ingest outcomes, latency."""
    figure = {name: m.get(f"wrk.{measure}.{name}", math.nan) for name in WRK_FIGURES}
    out = [Row("  non-2xx answers and socket errors (wrk)", figure["non_2xx"], "answers", target="0")]
    if measure != "H":
        events, queued = figure["events"], figure["outcomes.queued"]
        held = figure["outcomes.digested"] + figure["outcomes.rate_limited"]
        out += [
            Row(
                "  queued, of the events answered 2xx",
                queued,
                "events",
                queued / events if events else None,
                "2xx",
            ),
            Row("  digested or rate limited", held, "events", target="0"),
        ]
    return [*out, Row("  answer p99 (wrk, closed loop, 64 conns)", figure["latency_ms.p99"], "ms")]


def _cpu_rows(m: dict[str, float]) -> list[Row]:
    out = [
        Row("CPU per event (us of each process, same runs)", math.nan, ""),
        Row(
            "  of which: signature verification (RFC 9421)",
            m["verify_us"],
            "us/request",
            m["verify_us"] / m["cpu_us.single.gateway"],
            "gateway",
        ),
    ]
    for measure, process in CPU_ROWS:
        value = m[f"cpu_us.{measure}.{process}"]
        base = CPU_BASELINES.get((measure, process))
        if base is None:
            out.append(Row(f"  {measure}: {process}", value, "us/event"))
        else:
            ratio = value / m[f"cpu_us.{base[0]}.{base[1]}"]
            out.append(Row(f"  {measure}: {process}", value, "us/event", ratio, base[2]))
    return out


def _all_e2e_rows(report: dict[str, Any]) -> list[Row]:
    m, out = report["medians"], []
    for run, label in E2E_RUNS.items():
        if math.isnan(m.get(f"{run}.rate", math.nan)):  # not measured in this mode
            continue
        figures = {name.removeprefix(f"{run}."): value for name, value in m.items() if name.startswith(run)}
        title = f"e2e open loop @ {label}" + (" (target)" if run == E2E_TARGET_RUN else "")
        out += _e2e_rows(title, figures, run == E2E_TARGET_RUN)
    if soak := report.get("soak"):
        out += _e2e_rows(f"e2e soak, {soak['seconds']:.0f} s @ 70% pipeline max", soak, False)
    return out


def _rss_rows(report: dict[str, Any]) -> list[Row]:
    start, end = report["rss_mib_start_end"]
    label = "soak" if report.get("soak") else "e2e run"
    out = []
    if report.get("rss_mib_warm_end"):
        warm, _ = report["rss_mib_warm_end"]
        out += [
            Row(f"{who} RSS warm -> end of soak", end[who], "MiB", end[who] / warm[who], "warm", "flat")
            for who in ("gateway", "worker")
        ]
    return out + [
        Row(f"{who} RSS start -> end of {label}", end[who], "MiB", end[who] / start[who], "start", "flat")
        for who in ("gateway", "worker")
    ]


def _archive_rows(m: dict[str, float]) -> list[Row]:
    """The archive's figures beside delivery (none when the run had no PostgreSQL)."""
    delivered, rows, drain = (m.get(f"archive.{name}", math.nan) for name in ("delivery", "rows", "drain"))
    if math.isnan(delivered):
        return []
    return [
        Row("  same, with the archive on", delivered, "events/s", delivered / m["delivery"], "deliv"),
        Row("  archived in the same run", rows, "rows/s", rows / delivered, "deliv", ">= 0.95"),
        Row(
            f"archive drain alone ({ARCHIVE_BACKLOG_ROWS} rows, 1 worker)",
            drain,
            "rows/s",
            drain / m["delivery"],
            "deliv",
            ">= 2.00",
        ),
    ]


async def _measure_archive(plan: Plan, stack: Stack, archive_url: str) -> dict[str, float]:
    """A worker with PUSHGW_ARCHIVE_URL: delivered/s and archived rows/s in one run, then the archive
    backlog's drain alone (loadtest/archive_bench.py)."""
    redis_url, sim_url = stack.urls
    worker_env = {**stack.env, "PUSHGW_ARCHIVE_URL": archive_url}
    cpu = stack.pins.product
    async with server_process([*PUSHGW, "worker"], worker_env, sim_url + "/healthz", cpu) as worker:
        delivered, rows = await archive_bench.with_deliveries(worker, plan.seconds, sim_url, archive_url)
    await archive_bench.fill_backlog(redis_url, ARCHIVE_BACKLOG_ROWS)
    async with server_process([*PUSHGW, "worker"], worker_env, sim_url + "/healthz", cpu):
        drain = await archive_bench.drain_rate(redis_url, ARCHIVE_BACKLOG_ROWS)
    return {"delivery": delivered, "rows": rows, "drain": drain}


def _e2e_rows(title: str, figures: dict[str, Any], target: bool) -> list[Row]:
    accepted, events = figures["accepted"], figures["events"]
    return [
        Row(title, figures["rate"], "events/s"),
        Row(
            "  accepted (202) of the events sent",
            accepted,
            "events",
            accepted / events if events else None,
            "sent",
        ),
        Row("  accepted->delivered p50", figures["p50_ms"], "ms"),
        Row("  accepted->delivered p99", figures["p99_ms"], "ms", target="<= 20 ms" if target else ""),
        Row("  accepted->delivered p99.9", figures["p999_ms"], "ms"),
        Row("  intended send->delivered p99", figures["sent_p99_ms"], "ms"),
        Row("  ingress answer p99 (from intended send)", figures["answer_p99_ms"], "ms"),
        Row("  generator late p99 (sent - intended)", figures.get("sender_late_p99_ms", math.nan), "ms"),
        Row("  generator late max (sent - intended)", figures.get("sender_late_max_ms", math.nan), "ms"),
    ]


def render(report: dict[str, Any]) -> str:
    title = (
        f"pushgw bench ({report['mode']}; medians of {report['rounds']} round(s), "
        f"{report['seconds_per_measure']} s a measure; {report['cores']} cores; Redis appendfsync always; "
        f"default settings; pinning: {report.get('pinning', 'not recorded')})"
    )
    return table(title, rows(report))
