"""Redis CPU per ingest script call, two versions of the script side by side (issue 17).

    python -m loadtest.script_bench              # two private redis-servers: HEAD's script vs the tree's
    python -m loadtest.script_bench --redis-url redis://127.0.0.1:6379/0 --before HEAD~3

Both versions get the same events (distinct ids; customers uniform, or Zipf-skewed as in bench.py with
--skewed; one in ten with saved preferences) as pipelined EVALSHA calls with the KEYS and ARGV the gateway
sends (`Scripts.ingest_call`), each on an emptied Redis. With `--history` (the default) every customer has
a live timeline from earlier events, as after days of traffic; `--no-history` makes each customer's first
event of the run its first ever. The figure is CPU, not throughput (the machine is shared and noisy): the
server's used_cpu_user + used_cpu_sys (INFO CPU: the whole process, commands, replies, the AOF write and its
fsync) over the calls, and INFO commandstats per call. By default each version has a private server of its
own and the two are fed batch by batch in turn, so that the machine's noise falls on both alike; with one
--redis-url the versions take turns by round. Private servers run with the bench's persistence (appendfsync
always, server_command) and no automatic AOF rewrite, whose fork would land in one version's figure;
PUSHGW_TEST_REDIS=valkey picks the embedded valkey-server.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.event import parse_event
from gateway.core.local_servers import embedded_server_binary, server_binary
from gateway.core.preferences import compile_preferences
from gateway.core.scripts import IngestArgs, Scripts
from gateway.core.settings import RateLimit, Settings
from loadtest.payloads import EventFactory, customer_id
from loadtest.processes import redis_server

SCRIPTS_DIR = "gateway/core/scripts"
ROOT = Path(__file__).resolve().parent.parent
SOURCE = "bench"
PREFERRING = 10  # one customer in this many has saved preferences


@dataclass
class Version:
    """One version of the ingest script: its name and its full source (libraries first)."""

    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1


def _git_show(ref: str, path: str) -> str:
    return subprocess.run(
        ["git", "show", f"{ref}:{path}"],  # noqa: S607 - git from PATH
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def ingest_source(read: Callable[[str], str]) -> str:
    """The ingest script as scripts.py builds it (its libraries, then ingest.lua), read through `read`."""
    found = re.search(r'_Script\("ingest"((?:, "\w+")*)\)', read("gateway/core/scripts.py"))
    if not found:
        raise ValueError('no _Script("ingest", ...) in scripts.py')
    libs = re.findall(r'"(\w+)"', found[1])
    return "".join(
        [*(read(f"{SCRIPTS_DIR}/lib/{lib}.lua") for lib in libs), read(f"{SCRIPTS_DIR}/ingest.lua")]
    )


def versions(before: str) -> list[Version]:
    """The script at git ref `before` and the one in the working tree."""
    return [
        Version(f"before ({before})", ingest_source(lambda path: _git_show(before, path))),
        Version("after (tree)", ingest_source(lambda path: (ROOT / path).read_text(encoding="utf-8"))),
    ]


def ingest_args(event: dict[str, Any]) -> IngestArgs:
    """What the events handler passes for an event (its canonical form, hash and masked summary)."""
    return IngestArgs.of(SOURCE, parse_event(event), critical=False)


def preferences_of(index: int, now_s: int) -> dict[str, str]:
    """Saved preferences of a customer: a muted type, a minimum amount, quiet hours (some in them now)."""
    start_h = (index * 7) % 24
    doc = {
        "muted_types": ["refund"],
        "min_amount": {"credit": "1.00"},
        "quiet_hours": {
            "start": f"{start_h:02d}:00",
            "end": f"{(start_h + 2) % 24:02d}:00",
            "tz": "Asia/Shanghai",
        },
    }
    return compile_preferences(doc, now_s)


@dataclass
class Figures:
    """One version's cost over one round."""

    events: int
    cpu_us: float  # server process CPU per event
    evalsha_us: float  # commandstats usec_per_call of EVALSHA (the script, its commands included)
    commands: dict[str, tuple[float, float]]  # command -> (calls per event, usec per call)
    outcomes: Counter[str]


Call = tuple[list[str], list[Any]]
BATCH = 100  # calls in one pipeline


@dataclass(frozen=True)
class Plan:
    """What the bench sends: the calls, and the state each emptied Redis starts from."""

    calls: list[Call]
    events: int
    prefs: dict[str, dict[str, str]]  # preferences key -> compiled fields
    timelines: dict[str, str]  # timeline key -> a member accepted an hour ago
    ttl_ms: int


async def _cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _prepare(redis: Redis, version: Version, plan: Plan) -> float:
    """Empty the Redis, plant the plan's state, load the script; returns the server's CPU seconds so far."""
    await redis.flushall()
    hour_ago_ms = int(time.time() * 1000) - 3_600_000
    async with redis.pipeline(transaction=False) as pipe:
        for key, fields in plan.prefs.items():
            pipe.hset(key, items=[part for pair in fields.items() for part in pair])
        for key, member in plan.timelines.items():
            pipe.zadd(key, {member: hour_ago_ms})
            pipe.pexpire(key, plan.ttl_ms + plan.ttl_ms // 32)  # as the script keeps it: ttl + half the slack
        await pipe.execute()
    await redis.script_load(version.source)
    await redis.config_resetstat()
    return await _cpu_s(redis)


async def _send(redis: Redis, version: Version, calls: list[Call], outcomes: Counter[str]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for call_keys, argv in calls:
            pipe.execute_command("EVALSHA", version.sha, len(call_keys), *call_keys, *argv)
        for reply in await pipe.execute():
            for status in reply[::2]:  # status, detail of each event of the call
                outcomes[status.decode() if isinstance(status, bytes) else str(status)] += 1


async def _figures(redis: Redis, started_s: float, events: int, outcomes: Counter[str]) -> Figures:
    spent_s = await _cpu_s(redis) - started_s
    stats = await redis.info("commandstats")
    commands = {
        name.removeprefix("cmdstat_"): (int(stat["calls"]) / events, float(stat["usec_per_call"]))
        for name, stat in stats.items()
        if name not in {"cmdstat_info", "cmdstat_config|resetstat"}
    }
    evalsha_us = commands.pop("evalsha", (0.0, float("nan")))[1]
    return Figures(events, 1e6 * spent_s / events, evalsha_us, commands, outcomes)


async def run_round(clients: list[Redis], tested: list[Version], plan: Plan, flip: bool) -> list[Figures]:
    """Every version sends every call once, the first one first (last with `flip`). With a server per
    version their batches take turns; on one shared server a version sends all its calls after the other."""
    order = list(range(len(tested)))[:: -1 if flip else 1]
    servers = clients if len(clients) == len(tested) else [clients[0]] * len(tested)
    outcomes: list[Counter[str]] = [Counter() for _ in tested]
    batches = [plan.calls[at : at + BATCH] for at in range(0, len(plan.calls), BATCH)]
    figures: dict[int, Figures] = {}
    if len(set(map(id, servers))) == 1:
        for index in order:
            started_s = await _prepare(servers[index], tested[index], plan)
            for calls in batches:
                await _send(servers[index], tested[index], calls, outcomes[index])
            figures[index] = await _figures(servers[index], started_s, plan.events, outcomes[index])
    else:
        started = {index: await _prepare(servers[index], tested[index], plan) for index in order}
        for calls in batches:
            for index in order:
                await _send(servers[index], tested[index], calls, outcomes[index])
        for index in order:
            figures[index] = await _figures(servers[index], started[index], plan.events, outcomes[index])
    return [figures[index] for index in range(len(tested))]


@asynccontextmanager
async def private_server() -> AsyncIterator[str]:
    """A redis-server (or valkey-server) of our own, with the bench's persistence, on a free port."""
    binary = embedded_server_binary() if os.environ.get("PUSHGW_TEST_REDIS") == "valkey" else server_binary()
    with tempfile.TemporaryDirectory() as directory:
        extra = ["--auto-aof-rewrite-percentage", "0"]
        async with redis_server(Path(directory), binary=binary, extra=extra, epoch=False) as url:
            yield url


def _report(results: dict[str, list[Figures]], server: str) -> str:
    lines = [server]
    medians = {name: statistics.median(f.cpu_us for f in figures) for name, figures in results.items()}
    for name, figures in results.items():
        last = figures[-1]
        cpu = ", ".join(f"{f.cpu_us:.1f}" for f in figures)
        evalsha = statistics.median(f.evalsha_us for f in figures)
        script_commands = sum(calls for calls, _ in last.commands.values())
        lines += [
            f"\n{name}: server CPU {medians[name]:.1f} us/event (median of rounds: {cpu}); "
            f"EVALSHA {evalsha:.1f} us/call; {script_commands:.2f} commands/event in the script",
            f"  outcomes: {dict(last.outcomes)}",
            "  command            calls/event   usec/call",
        ]
        by_cost = sorted(last.commands.items(), key=lambda item: -item[1][0] * item[1][1])
        lines += [f"  {command:<18} {calls:>11.3f} {usec:>11.2f}" for command, (calls, usec) in by_cost]
    names = list(medians)
    if len(names) == 2:
        ratios = [b.cpu_us / a.cpu_us for a, b in zip(results[names[0]], results[names[1]], strict=True)]
        lines.append(
            f"\nratio {names[1]} / {names[0]}: {medians[names[1]] / medians[names[0]]:.2f} "
            f"(per round: {', '.join(f'{ratio:.2f}' for ratio in ratios)})"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class Options:
    """The command line."""

    before: str
    events: int
    rounds: int
    customers: int
    limit: RateLimit
    skewed: bool
    history: bool
    per_call: int = 1


def make_plan(options: Options) -> Plan:
    settings = Settings(rate_limit=options.limit)
    scripts = Scripts(settings)
    factory = EventFactory(options.customers, prefix="SB")
    pick = random.Random(2).randrange
    events = [
        ingest_args(factory.event(None if options.skewed else pick(options.customers)))
        for _ in range(options.events)
    ]
    per_call = options.per_call
    calls = [scripts.ingest_call(events[at : at + per_call]) for at in range(0, len(events), per_call)]
    now_s = int(time.time())
    shard = {i: keys.shard_of(customer_id(i), settings.shards) for i in range(options.customers)}
    prefs = {
        keys.preferences(shard[i], customer_id(i)): preferences_of(i, now_s)
        for i in range(0, options.customers, PREFERRING)
    }
    timelines = {
        keys.customer_events(shard[i], customer_id(i)): f"{SOURCE}:earlier-{i}"
        for i in (range(options.customers) if options.history else ())
    }
    return Plan(calls, len(events), prefs, timelines, settings.event_ttl_s * 1000)


async def bench(urls: list[str], options: Options) -> str:
    plan = make_plan(options)
    tested = versions(options.before)
    results: dict[str, list[Figures]] = {version.name: [] for version in tested}
    clients = [Redis.from_url(url) for url in urls]
    try:
        server = (await clients[0].info("server")).get("redis_version", "?")
        for round_no in range(options.rounds):
            for version, figures in zip(
                tested, await run_round(clients, tested, plan, round_no % 2 == 1), strict=True
            ):
                results[version.name].append(figures)
    finally:
        for client in clients:
            await client.flushall()
            await client.aclose()
    where = "one server per version, fed in turn" if len(urls) > 1 else "one server, versions by turns"
    return _report(results, f"server {server} ({where}); {options}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--redis-url",
        action="append",
        help="a Redis to use (it is FLUSHALLed); once: shared by the versions, twice: one each "
        "(default: two private servers)",
    )
    parser.add_argument("--before", default="HEAD", help="git ref of the script to compare with (HEAD)")
    parser.add_argument("--events", type=int, default=20_000, help="events per version and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds, the versions' order alternating")
    parser.add_argument("--customers", type=int, default=5_000, help="bound customers the events go to")
    parser.add_argument(
        "--skewed",
        action="store_true",
        help="customers Zipf-skewed as in bench.py (the hot ones mostly digested); default: uniform",
    )
    parser.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="customers have a live timeline from earlier events (default), or start without one",
    )
    parser.add_argument("--rate-limit", default="5/60", help="N/W, as PUSHGW_RATE_LIMIT")
    parser.add_argument(
        "--per-call",
        type=int,
        default=1,
        help="events in one script call (the gateway sends up to 64: gateway/ingest.py EVENTS_PER_CALL)",
    )
    args = parser.parse_args(argv)
    count, window_s = (int(part) for part in args.rate_limit.split("/"))
    options = Options(
        args.before,
        args.events,
        args.rounds,
        args.customers,
        RateLimit(count, window_s),
        args.skewed,
        args.history,
        args.per_call,
    )

    async def run() -> str:
        if args.redis_url:
            return await bench(args.redis_url, options)
        async with private_server() as first, private_server() as second:
            return await bench([first, second], options)

    sys.stdout.write(asyncio.run(run()) + "\n")


if __name__ == "__main__":
    main()
