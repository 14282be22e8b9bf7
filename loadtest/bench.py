"""`pushgw bench`: start what it needs, measure ingress and delivery beside their baselines, print a table.

Every figure that matters is a ratio against a baseline measured in the same run on the same cores:
  H    bare aiohttp hello-world, requests/s       -> single-event and batch ingress are read against it
  C    bare aiohttp client sending template messages to the simulator -> worker delivery is read against it
  SIM  the simulator driven by two client processes (its own ceiling: C and delivery cannot pass it)
  XADD redis-benchmark XADD, pipelined 64 deep, on the bench's Redis (appendfsync always): the queue's ceiling
The pipeline's maximum is measured with every process running at once (on shared cores the stages' maxima
measured alone do not add up): an open loop ramping past the narrower stage's maximum, reading where the
deliveries level off. End-to-end latency is measured open loop (loadtest/openloop.py) at 70% of that maximum
(the full run also at 35% of it and at 70% of the narrower stage alone), from the event's accepted time to
its delivered time (both Redis TIME). The load generator runs in its own process; each
server is its own process (this machine has 2 cores).
"""

from __future__ import annotations

import asyncio
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.archive.server import running_postgres
from gateway.core.local_servers import free_port, server_binary, server_command
from gateway.core.redis import init_epoch
from loadtest import archive_bench
from loadtest.payloads import customer_id, openid_of
from loadtest.report import Row, percentile, table

KEY_ID, SECRET = "bench", "bench-secret"
APPID, APP_SECRET = "wx_bench_app", "bench_app_secret"
CUSTOMERS = 1000
WORKER_CONCURRENCY = 256  # the default: deliveries wait on WeChat and Redis fsyncs, not on the CPU
WARM_UP_SAMPLES = 6  # soak RSS samples are 10 s apart: the first minute is warm-up
E2E_SHARE = 0.7
ARCHIVE_BACKLOG_ROWS = 30_000  # the archive drain measure's backlog
E2E_RUNS = {
    "e2e_at_pipeline": "70% pipeline max",
    "e2e_at_35": "35% pipeline max",
    "e2e_at_stages": "70% narrower stage max",
}
PUSHGW = [sys.executable, "-c", "from gateway.cli import main; main()"]
# (measure, process) of the CPU-per-event rows; "loadgen" is the load generator (in C: the bare client)
CPU_ROWS = [
    ("H", "hello"),
    ("H", "loadgen"),
    ("single", "gateway"),
    ("single", "redis"),
    ("single", "loadgen"),
    ("batch", "gateway"),
    ("batch", "redis"),
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


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs and how often the rounds repeat."""

    seconds: float
    rounds: int
    e2e_seconds: float
    drain_s: float
    quick: bool
    soak_s: float = 0.0
    profile_dir: Path | None = None

    @classmethod
    def make(cls, quick: bool, soak_s: float = 0.0, profile_dir: str | None = None) -> Plan:
        profile = Path(profile_dir) if profile_dir else None
        if quick:
            return cls(2.5, 1, 4.0, 10.0, True, soak_s, profile)
        return cls(6.0, 3, 8.0, 20.0, False, soak_s, profile)


def rss_mib(pid: int) -> float:
    """Resident set size of a process in MiB (Linux /proc), nan where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc), nan where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


class CpuUse:
    """CPU seconds spent inside a `with` block by named server processes and by the load generator (the
    children of this process that finished in the block). `per_event_us` divides them by the events."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self._spent: dict[str, float] = {}

    def __enter__(self) -> CpuUse:
        self._spent = {name: -cpu_seconds(pid) for name, pid in self._pids.items()}
        self._spent["loadgen"] = -_children_cpu_s()
        return self

    def __exit__(self, *_: object) -> None:
        for name, pid in self._pids.items():
            self._spent[name] += cpu_seconds(pid)
        self._spent["loadgen"] += _children_cpu_s()

    def per_event_us(self, events: float) -> dict[str, float]:
        spent = {name: s for name, s in self._spent.items() if name != "loadgen" or s > 0}
        return {name: 1e6 * s / events if events else float("nan") for name, s in spent.items()}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@asynccontextmanager
async def server_process(
    args: Sequence[str], env: dict[str, str], ready_url: str
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A server process, ready once `ready_url` answers; stopped (SIGTERM) on exit."""
    process = subprocess.Popen(list(args), env={**os.environ, **env}, stdout=subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):
                try:
                    async with session.get(ready_url) as response:
                        if response.status < 500:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def redis_server(directory: Path) -> AsyncIterator[str]:
    port = free_port()
    process = subprocess.Popen(server_command(server_binary(), port, directory), stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = Redis.from_url(url)
        for _ in range(200):
            try:
                await client.ping()
                break
            except Exception:  # not up yet
                await asyncio.sleep(0.05)
        await init_epoch(client, 1)  # a new deployment: without its data epoch nothing is accepted
        await client.aclose()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@asynccontextmanager
async def _profiled(plan: Plan, process: subprocess.Popen[bytes], name: str) -> AsyncIterator[None]:
    """With --profile DIR: py-spy samples the process while the block runs (collapsed stacks, -f raw)."""
    if plan.profile_dir is None:
        yield
        return
    plan.profile_dir.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = plan.profile_dir / f"{name}.txt"
    command = [
        spy,
        "record",
        "-f",
        "raw",
        "-r",
        "250",
        "--nonblocking",
        "-p",
        str(process.pid),
        "-o",
        str(out),
    ]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it sampled
        recorder.wait(timeout=30)


def _load_args(url: str, mode: str, seconds: float, connections: int, extra: dict[str, str]) -> list[str]:
    args = [sys.executable, "-m", "loadtest.loadgen", "--url", url, "--mode", mode, "--seconds", str(seconds)]
    args += ["--connections", str(connections), "--key-id", KEY_ID, "--secret", SECRET]
    args += ["--customers", str(CUSTOMERS)]
    for name, value in extra.items():
        args += [f"--{name.replace('_', '-')}", value]
    return args


def run_load(url: str, mode: str, seconds: float, connections: int = 64, **extra: str) -> dict[str, Any]:
    """Run the closed-loop load generator process and return its tally."""
    out = subprocess.run(
        _load_args(url, mode, seconds, connections, extra), check=True, capture_output=True, text=True
    ).stdout
    tally: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return tally


async def _load_parallel(url: str, mode: str, seconds: float, processes: int, **extra: str) -> float:
    """Events/s of `processes` load generators together (the simulator's own capacity)."""
    tallies = await asyncio.gather(
        *(
            asyncio.to_thread(run_load, url, mode, seconds, 64, seed=str(i + 11), **extra)
            for i in range(processes)
        )
    )
    return sum(rate_of(tally) for tally in tallies)


def rate_of(tally: dict[str, Any]) -> float:
    return float(tally["events"]) / float(tally["seconds"])


def gateway_env(redis_url: str, sim_url: str) -> dict[str, str]:
    return {
        "PUSHGW_REDIS_URL": redis_url,
        "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
        "PUSHGW_RATE_LIMIT": "1000000/60",
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
    env: dict[str, str], coalesce: bool = True
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**env, "PUSHGW_INGEST_COALESCE": "true" if coalesce else "false"}
    async with server_process([*PUSHGW, "gateway", "--port", str(port)], env, url + "/healthz") as process:
        yield url, process


Measured = tuple[float, dict[str, float]]
"""events/s, and CPU microseconds per event of each process involved"""


def _measured_load(url: str, mode: str, seconds: float, pids: dict[str, int], **extra: str) -> Measured:
    with CpuUse(pids) as cpu:
        tally = run_load(url, mode, seconds, 64, **extra)
    return rate_of(tally), cpu.per_event_us(float(tally["events"]))


async def _measure_ingress(
    plan: Plan, env: dict[str, str], coalesce: bool, mode: str, redis_pid: int
) -> Measured:
    async with _gateway(env, coalesce) as (url, process):
        run_load(url, mode, 1.0)  # warm up
        async with _profiled(plan, process, f"gateway-{mode}" + ("" if coalesce else "-uncoalesced")):
            return _measured_load(url, mode, plan.seconds, {"gateway": process.pid, "redis": redis_pid})


async def _measure_hello(seconds: float) -> Measured:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "loadtest.hello", "--port", str(port)]
    async with server_process(command, {}, url + "/") as process:
        run_load(url, "single", 1.0)
        return _measured_load(url, "single", seconds, {"hello": process.pid})


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


async def _measure_delivery(
    plan: Plan, env: dict[str, str], sim_url: str, redis_url: str, pids: dict[str, int]
) -> Measured:
    """Events/s a worker delivers from a backlog (the stream filled by the ingress runs)."""
    redis = Redis.from_url(redis_url, decode_responses=True)
    backlog = int(await redis.xlen(keys.stream(0)))
    await redis.aclose()
    async with aiohttp.ClientSession() as session:
        before = await sim_delivered(session, sim_url)
        async with server_process([*PUSHGW, "worker"], env, sim_url + "/healthz") as worker:
            await asyncio.sleep(1.0)  # start-up and token fetch are not throughput
            start_count, started = await sim_delivered(session, sim_url), time.monotonic()
            async with _profiled(plan, worker, "worker-delivery"):
                with CpuUse({"worker": worker.pid, **pids}) as cpu:
                    await asyncio.sleep(plan.seconds)
                    done = await sim_delivered(session, sim_url)
            elapsed = time.monotonic() - started
    if done - before >= backlog:
        sys.stderr.write("warning: the backlog ran out during the delivery measurement\n")
    return (done - start_count) / elapsed, cpu.per_event_us(done - start_count)


def _xadd_redis_benchmark(redis_url: str, seconds: float) -> float | None:
    """XADD ops/s from redis-benchmark, 64 commands a pipeline, 16 clients; None if it is not installed."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return None
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    requests = str(int(60_000 * seconds))
    command = [binary, "-p", port, "-c", "16", "-P", "64", "-n", requests, "-q", "--csv"]
    command += ["XADD", "bench:xadd", "MAXLEN", "~", "100000", "*", "ev", "x" * 300]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
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


async def _measure_xadd(redis_url: str, seconds: float) -> float:
    rate = await asyncio.to_thread(_xadd_redis_benchmark, redis_url, seconds)
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


async def _bind_customers(redis_url: str) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    async with redis.pipeline(transaction=False) as pipe:
        for index in range(CUSTOMERS):
            pipe.hset(
                keys.binding(customer_id(index)), mapping={"openid": openid_of(index), "status": "active"}
            )
        await pipe.execute()
    await redis.aclose()


async def _fresh_queue(redis_url: str) -> None:
    """Empty Redis (the ingress runs left a backlog that would sit in front of the timed events), initialise
    its data epoch again (no process runs on it now), rebind."""
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await init_epoch(redis, 1)
    await redis.aclose()
    await _bind_customers(redis_url)


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


async def _open_loop(
    env: dict[str, str],
    urls: tuple[str, str],
    rate: float,
    seconds: float,
    drain_s: float,
    rate_to: float | None = None,
) -> OpenLoop:
    """Open-loop events at `rate`/s (ramping to `rate_to`) for `seconds` through gateway, Redis, worker
    and simulator, all running at once; then up to `drain_s` for the events to reach a final state."""
    redis_url, sim_url = urls
    await _fresh_queue(redis_url)
    rss: list[dict[str, float]] = []
    async with server_process([*PUSHGW, "worker"], env, sim_url + "/healthz") as worker:
        await asyncio.sleep(1.0)  # the worker made its group and fetched a token
        async with _gateway(env) as (url, gateway):
            sampler = asyncio.create_task(_sample_rss({"gateway": gateway, "worker": worker}, 10.0, rss))
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "open.json"
                command = [sys.executable, "-m", "loadtest.openloop", "--url", url, "--rate", f"{rate:.0f}"]
                command += ["--seconds", str(seconds), "--customers", str(CUSTOMERS), "--out", str(out)]
                command += ["--key-id", KEY_ID, "--secret", SECRET]
                if rate_to is not None:
                    command += ["--rate-to", f"{rate_to:.0f}"]
                await asyncio.to_thread(subprocess.run, command, check=True)
                result = orjson.loads(out.read_bytes())
            found = await _statuses(redis_url, result["events"], drain_s)
            sampler.cancel()
            rss.append({"gateway": rss_mib(gateway.pid), "worker": rss_mib(worker.pid)})
    return OpenLoop(result, found, rss)


async def _measure_e2e(
    plan: Plan, env: dict[str, str], urls: tuple[str, str], rate: float, seconds: float
) -> dict[str, Any]:
    """Latency percentiles of open-loop events at a constant `rate`/s."""
    run = await _open_loop(env, urls, rate, seconds, plan.drain_s)
    summary: dict[str, Any] = latency_summary(run.result["events"], run.found)
    summary.update(rate=rate, seconds=seconds, sender_late_p99_ms=run.result["sender_late_p99_ms"])
    summary["rss_mib"] = run.rss_mib
    return summary


async def _measure_pipeline_max(
    plan: Plan, env: dict[str, str], urls: tuple[str, str], ceiling: float
) -> float:
    """Events/s the whole pipeline delivers with every process on the same cores: an open loop ramping
    from 20% to 120% of `ceiling` (the narrower stage measured alone); once the offered rate passes what
    the pipeline sustains, deliveries level off there. Only deliveries while events were still being sent
    count (in the drain after it the gateway is idle and the worker has the cores to itself)."""
    run = await _open_loop(env, urls, 0.2 * ceiling, plan.e2e_seconds, drain_s=0.0, rate_to=1.2 * ceiling)
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


async def _round(
    plan: Plan,
    env: dict[str, str],
    urls: tuple[str, str],
    token: str,
    pids: dict[str, int],
    archive_url: str | None = None,
    *,
    measure_verify_us: Callable[[], float],
) -> dict[str, Any]:
    """One A/B round: each baseline right beside the product figure read against it. `pids`: the Redis
    and simulator processes (for the CPU each spends per event). `measure_verify_us`: the CPU of the
    gateway's signature check per request (given by the CLI: loadtest never imports the ingress)."""
    redis_url, sim_url = urls
    seconds = plan.seconds
    redis_pid = pids["redis"]
    measured: dict[str, Measured] = {"H": await _measure_hello(seconds)}
    measured["single"] = await _measure_ingress(plan, env, True, "single", redis_pid)
    if not plan.quick:
        measured["single_uncoalesced"] = await _measure_ingress(plan, env, False, "single", redis_pid)
    measured["batch"] = await _measure_ingress(plan, env, True, "batch", redis_pid)
    measured["C"] = _measured_load(sim_url, "template", seconds, {"sim": pids["sim"]}, token=token)
    measured["delivery"] = await _measure_delivery(plan, env, sim_url, redis_url, pids)
    got: dict[str, Any] = {name: rate for name, (rate, _) in measured.items()}
    if archive_url:  # before the open loops, which empty Redis: it delivers the backlog the ingress left
        got["archive"] = await _measure_archive(plan, env, urls, archive_url)
    got["cpu_us"] = {name: cpu for name, (_, cpu) in measured.items()}
    got["XADD"] = await _measure_xadd(redis_url, min(seconds, 2.0))
    got["verify_us"] = measure_verify_us()
    # two client processes share 2 cores with the simulator, so the larger of the two runs is its floor
    got["SIM"] = max(got["C"], await _load_parallel(sim_url, "template", seconds, 2, token=token))
    got["stages_max"] = min(got["single"], got["delivery"])
    got["pipeline_max"] = await _measure_pipeline_max(plan, env, urls, got["stages_max"])
    pipeline_max = got["pipeline_max"]
    got["e2e_at_pipeline"] = await _measure_e2e(plan, env, urls, E2E_SHARE * pipeline_max, plan.e2e_seconds)
    if not plan.quick:  # where does the latency target hold? half that load; and at 70% of a stage alone
        got["e2e_at_35"] = await _measure_e2e(plan, env, urls, E2E_SHARE / 2 * pipeline_max, plan.e2e_seconds)
        got["e2e_at_stages"] = await _measure_e2e(
            plan, env, urls, E2E_SHARE * got["stages_max"], plan.e2e_seconds
        )
    return got


async def run_bench(
    measure_verify_us: Callable[[], float],
    quick: bool = False,
    json_path: str | None = None,
    soak_s: float = 0.0,
    profile_dir: str | None = None,
) -> dict[str, Any]:
    plan = Plan.make(quick, soak_s, profile_dir)
    rounds: list[dict[str, Any]] = []
    soak: dict[str, Any] | None = None
    with (
        tempfile.TemporaryDirectory(prefix="pushgw-bench-") as tmp,
        running_postgres() as archive,
    ):
        if archive is not None:
            await archive_bench.migrated(archive)
        async with redis_server(Path(tmp)) as redis_url:
            await _bind_customers(redis_url)
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            env = gateway_env(redis_url, sim_url)
            sim_command = [*PUSHGW, "sim", "--port", str(sim_port)]
            async with server_process(sim_command, env, sim_url + "/healthz") as sim:
                token = await _sim_token(sim_url)
                pids = {"redis": await _redis_pid(redis_url), "sim": sim.pid}
                for _ in range(plan.rounds):  # A/B rounds: baseline and product alternate on the same cores
                    rounds.append(
                        await _round(
                            plan,
                            env,
                            (redis_url, sim_url),
                            token,
                            pids,
                            archive,
                            measure_verify_us=measure_verify_us,
                        )
                    )
                if plan.soak_s > 0:
                    rate = statistics.median(r["e2e_at_pipeline"]["rate"] for r in rounds)
                    soak = await _measure_e2e(
                        Plan(plan.seconds, 1, plan.soak_s, 60.0, False),
                        env,
                        (redis_url, sim_url),
                        rate,
                        plan.soak_s,
                    )
    report = summarise(rounds, soak, plan)
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


def summarise(rounds: list[dict[str, Any]], soak: dict[str, Any] | None, plan: Plan) -> dict[str, Any]:
    """Medians over the rounds of every figure (the JSON report; `render` prints it)."""
    names = ["H", "single", "single_uncoalesced", "batch", "XADD", "C", "SIM", "delivery", "stages_max"]
    names += ["pipeline_max", "verify_us", "archive.delivery", "archive.rows", "archive.drain"]
    names += [f"cpu_us.{measure}.{process}" for measure, process in CPU_ROWS]
    medians = {name: _median(rounds, name) for name in names}
    for run in E2E_RUNS:
        for field in (
            "rate",
            "p50_ms",
            "p99_ms",
            "p999_ms",
            "sent_p99_ms",
            "answer_p99_ms",
            "events",
            "accepted",
            "delivered",
        ):
            medians[f"{run}.{field}"] = _median(rounds, f"{run}.{field}")
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


def rows(report: dict[str, Any]) -> list[Row]:
    """The table's rows from a report: baselines first, then each product figure with its ratio."""
    m = report["medians"]
    out = [
        Row("H: bare aiohttp hello-world", m["H"], "req/s"),
        Row("C: bare aiohttp client -> simulator", m["C"], "msg/s", m["C"] / m["SIM"], "SIM"),
        Row("SIM: simulator capacity (2 client procs)", m["SIM"], "msg/s"),
        Row("XADD: redis-benchmark, pipelined x64", m["XADD"], "ops/s"),
        Row("single-event ingress", m["single"], "events/s", m["single"] / m["H"], "H", ">= 0.60"),
    ]
    if m["single_uncoalesced"] == m["single_uncoalesced"]:  # not nan: measured in full runs
        out.append(
            Row(
                "  same, one Redis round trip per request",
                m["single_uncoalesced"],
                "events/s",
                m["single_uncoalesced"] / m["H"],
                "H",
            )
        )
    out += [
        Row("batch ingress (100 per request)", m["batch"], "events/s", m["batch"] / m["H"], "H", ">= 4.00"),
        Row(
            "  batch ingress against the queue ceiling",
            m["batch"],
            "events/s",
            m["batch"] / m["XADD"],
            "XADD",
        ),
        Row(
            f"worker delivery (1 process, concurrency {WORKER_CONCURRENCY})",
            m["delivery"],
            "events/s",
            m["delivery"] / m["C"],
            "C",
            ">= 0.70",
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
    out.append(Row("CPU per event (us of each process, same runs)", math.nan, ""))
    out.append(
        Row(
            "  of which: signature verification (RFC 9421)",
            m["verify_us"],
            "us/request",
            m["verify_us"] / m["cpu_us.single.gateway"],
            "gateway",
        )
    )
    for measure, process in CPU_ROWS:
        value = m[f"cpu_us.{measure}.{process}"]
        base = CPU_BASELINES.get((measure, process))
        if base is None:
            out.append(Row(f"  {measure}: {process}", value, "us/event"))
        else:
            out.append(
                Row(
                    f"  {measure}: {process}",
                    value,
                    "us/event",
                    value / m[f"cpu_us.{base[0]}.{base[1]}"],
                    base[2],
                )
            )
    for run, label in E2E_RUNS.items():
        if m[f"{run}.rate"] != m[f"{run}.rate"]:  # nan: not measured in this mode
            continue
        figures = {name.removeprefix(f"{run}."): value for name, value in m.items() if name.startswith(run)}
        out += _e2e_rows(f"e2e open loop @ {label}", figures)
    if soak := report.get("soak"):
        out += _e2e_rows(f"e2e soak, {soak['seconds']:.0f} s @ 70% pipeline max", soak)
    start, end = report["rss_mib_start_end"]
    label = "soak" if report.get("soak") else "e2e run"
    if report.get("rss_mib_warm_end"):
        warm, _ = report["rss_mib_warm_end"]
        out += [
            Row(f"{who} RSS warm -> end of soak", end[who], "MiB", end[who] / warm[who], "warm", "flat")
            for who in ("gateway", "worker")
        ]
    out += [
        Row(
            f"gateway RSS start -> end of {label}",
            end["gateway"],
            "MiB",
            end["gateway"] / start["gateway"],
            "start",
            "flat",
        ),
        Row(
            f"worker RSS start -> end of {label}",
            end["worker"],
            "MiB",
            end["worker"] / start["worker"],
            "start",
            "flat",
        ),
    ]
    return out


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


async def _measure_archive(
    plan: Plan, env: dict[str, str], urls: tuple[str, str], archive_url: str
) -> dict[str, float]:
    """A worker with PUSHGW_ARCHIVE_URL: delivered/s and archived rows/s in one run, then the archive
    backlog's drain alone (loadtest/archive_bench.py)."""
    redis_url, sim_url = urls
    worker_env = {**env, "PUSHGW_ARCHIVE_URL": archive_url}
    async with server_process([*PUSHGW, "worker"], worker_env, sim_url + "/healthz") as worker:
        delivered, rows = await archive_bench.with_deliveries(worker, plan.seconds, sim_url, archive_url)
    await archive_bench.fill_backlog(redis_url, ARCHIVE_BACKLOG_ROWS)
    async with server_process([*PUSHGW, "worker"], worker_env, sim_url + "/healthz"):
        drain = await archive_bench.drain_rate(redis_url, ARCHIVE_BACKLOG_ROWS)
    return {"delivery": delivered, "rows": rows, "drain": drain}


def _e2e_rows(title: str, figures: dict[str, Any]) -> list[Row]:
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
        Row("  accepted->delivered p99", figures["p99_ms"], "ms", target="<= 20 ms"),
        Row("  accepted->delivered p99.9", figures["p999_ms"], "ms"),
        Row("  intended send->delivered p99", figures["sent_p99_ms"], "ms"),
        Row("  ingress answer p99 (from intended send)", figures["answer_p99_ms"], "ms"),
    ]


def render(report: dict[str, Any]) -> str:
    title = (
        f"pushgw bench ({report['mode']}; medians of {report['rounds']} round(s), "
        f"{report['seconds_per_measure']} s a measure; {report['cores']} cores; Redis appendfsync always)"
    )
    return table(title, rows(report))
