"""Client CPU per Redis call: redis-py as the gateway drives it, cheaper redis-py paths, and valkey-glide.

Each variant sends the same calls to a private redis-server (or a local Redis Cluster with `--cluster`): a
script shaped like ingest (8 keys of one shard, 14 arguments, one a 300-byte JSON) in batches of `batch`,
and for delivery one XREADGROUP COUNT `batch` plus a finish script per entry. What is measured is this
process's CPU per call (`time.process_time`: every thread, glide's Rust threads included) and the event
loop thread's alone (`time.thread_time`), not wall time: the machine is shared and noisy. Variants run
interleaved in rounds (their order rotated each round) and the table gives each one's median over rounds.

valkey-glide is optional (not a dependency of the project): without it its variants are left out.

    python -m loadtest.client_bench [--rounds 15] [--steps 20] [--batch 64] [--cluster] [--only NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib
import importlib.metadata
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson
import redis.utils
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from gateway.core import keys
from gateway.core.coalesce import Coalescer, each
from gateway.core.local_servers import free_port, server_binary, server_command
from gateway.core.redis import (
    AnyPipeline,
    RedisClient,
    connect,
    connect_cluster,
    deadline,
    packing_in_c,
)
from gateway.core.scripts import IngestArgs, Scripts
from gateway.core.settings import Settings
from loadtest.cluster import LocalCluster

DEADLINE_S = 1.0
GROUP = "bench"
CONSUMER = "bench-1"
# the shapes of ingest.lua and finish.lua (KEYS, ARGV) without their work: the server's share is not measured
INGEST_LUA = "return {'queued', ARGV[2]}"
FINISH_LUA = "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) return 1"


@dataclass(frozen=True)
class Call:
    """One script call: its KEYS and ARGV."""

    keys: tuple[str, ...]
    args: tuple[str | bytes, ...]


def sha_of(source: str) -> str:
    return hashlib.sha1(source.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA1


def ingest_calls(count: int, shards: int) -> list[Call]:
    """`count` ingest calls of one event each, as the gateway builds them (`Scripts.ingest_call`), over
    `shards` shards (customers spread over them, as in production)."""
    scripts = Scripts(Settings(shards=shards))
    calls = []
    for i in range(count):
        customer, event_id = f"c{i:06d}", f"evt-{i:010d}"
        canonical = orjson.dumps({"event_id": event_id, "customer_id": customer, "pad": "x" * 220})[:300]
        summary = (("type", "debit"), ("amount", "123.45"), ("account_tail", "1234"))
        event = IngestArgs("cbs", event_id, customer, canonical, "ab" * 32, "debit", "12345", False, summary)
        call_keys, call_args = scripts.ingest_call([event])
        calls.append(
            Call(tuple(call_keys), tuple(a if isinstance(a, str | bytes) else str(a) for a in call_args))
        )
    return calls


def finish_call(entry_id: str) -> Call:
    """A finish-shaped call (6 keys of shard 0, 12 arguments) that acks `entry_id`."""
    shard = 0
    return Call(
        (
            keys.stream(shard),
            keys.retries(shard),
            keys.dead_letters(shard),
            keys.notices(shard),
            keys.archive(shard),
            keys.event(shard, "cbs", entry_id),
        ),
        (GROUP, entry_id, "delivered", "1", "", "msgid-1", "0", b"{}" * 60, "604800", ",", "", ""),
    )


def evalsha(sha: str, call: Call) -> list[str | bytes]:
    return ["EVALSHA", sha, str(len(call.keys)), *call.keys, *call.args]


def check(results: list[Any], expected: int) -> None:
    """A variant that got errors back (NOSCRIPT, say) did not do the work: it must not look cheap."""
    if len(results) != expected:
        raise RuntimeError(f"{len(results)} results for {expected} calls")
    for result in results:
        if isinstance(result, BaseException):
            raise RuntimeError(f"a call failed: {result!r}")


@dataclass
class Variant:
    """`step` sends `calls` calls (measured); `prepare` readies the next step (not measured)."""

    name: str
    path: str
    calls: int
    step: Callable[[], Awaitable[None]]
    prepare: Callable[[], Awaitable[None]] | None = None


@dataclass
class Result:
    variant: Variant
    cpu_us: list[float] = field(default_factory=list)  # per call, one per round
    loop_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)


async def measure(variants: list[Variant], rounds: int, steps: int) -> list[Result]:
    """Each variant `steps` steps per round, the variants interleaved (order rotated by round) after one
    unrecorded warm-up step each. Returns the per-call samples of every round."""
    results = [Result(variant) for variant in variants]
    for result in results:
        await _run(result.variant, 1)
    for round_ in range(rounds):
        shift = round_ % len(results)
        for result in results[shift:] + results[:shift]:
            cpu_s, loop_s, wall_s = await _run(result.variant, steps)
            calls = steps * result.variant.calls
            result.cpu_us.append(cpu_s / calls * 1e6)
            result.loop_us.append(loop_s / calls * 1e6)
            result.wall_us.append(wall_s / calls * 1e6)
    return results


async def _run(variant: Variant, steps: int) -> tuple[float, float, float]:
    cpu = loop = wall = 0.0
    for _ in range(steps):
        if variant.prepare is not None:
            await variant.prepare()
        cpu0, loop0, wall0 = time.process_time(), time.thread_time(), time.perf_counter()
        await variant.step()
        cpu += time.process_time() - cpu0
        loop += time.thread_time() - loop0
        wall += time.perf_counter() - wall0
    return cpu, loop, wall


# --- redis-py -----------------------------------------------------------------------------------------------


def redis_py_ingest(client: RedisClient, stock: RedisClient, calls: list[Call], on: str) -> list[Variant]:
    """The gateway's client (`connect`: C packing, one deadline per round trip) through the Coalescer as
    ingest uses it, a bare pipeline as the Coalescer builds it, one EVALSHA per task, and the stock
    client's pipeline for reference."""
    sha, n = sha_of(INGEST_LUA), len(calls)

    async def queue(pipe: AnyPipeline, call: Call) -> int:
        pipe.execute_command(*evalsha(sha, call))
        return 1

    async def no_reload(_: RedisClient) -> None:
        raise RuntimeError("the bench loaded its scripts: NOSCRIPT is a bench bug")

    coalescer = Coalescer(client, each(queue), no_reload, deadline_s=DEADLINE_S, max_batch=n)

    async def coalescer_many() -> None:
        check([r for [r] in await coalescer.submit_many(calls)], n)

    async def coalescer_tasks() -> None:
        check([r for [r] in await asyncio.gather(*(coalescer.submit(c) for c in calls))], n)

    async def pipeline(target: RedisClient = client) -> None:
        async with target.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.execute_command(*evalsha(sha, call))
            async with deadline(DEADLINE_S):
                check(await pipe.execute(raise_on_error=False), n)

    async def stock_pipeline() -> None:
        await pipeline(stock)

    async def tasks() -> None:
        check(await asyncio.gather(*(client.execute_command(*evalsha(sha, c)) for c in calls)), n)

    variants = [
        Variant(
            "redispy-coalescer-many", f"redis-py{on}: Coalescer.submit_many (ingest batch)", n, coalescer_many
        ),
        Variant("redispy-coalescer-tasks", f"redis-py{on}: {n} tasks Coalescer.submit", n, coalescer_tasks),
        Variant("redispy-pipeline", f"redis-py{on}: pipeline(transaction=False), connect()", n, pipeline),
        Variant(
            "redispy-pipeline-stock", f"redis-py{on}: pipeline, stock from_url client", n, stock_pipeline
        ),
        Variant("redispy-tasks", f"redis-py{on}: {n} tasks, one EVALSHA each", n, tasks),
    ]
    if isinstance(client, Redis):
        variants.append(_raw_connection(client, sha, calls))
    return variants


def c_packed_cluster(url: str) -> RedisCluster:
    """The gateway's cluster client with the C packing that `connect` gives a single Redis's connections
    (redis-py's RedisCluster fixes its connection class: swapped here before the first command, on the startup
    nodes and for the nodes it discovers)."""
    client = connect_cluster(Settings(redis_url=url, redis_timeout_s=DEADLINE_S))
    connection_class = cast(type[Connection], packing_in_c(Connection))
    client.nodes_manager.connection_kwargs["connection_class"] = connection_class
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = connection_class
    return client


def redis_py_cluster_c_packed(client: RedisCluster, calls: list[Call]) -> Variant:
    sha, n = sha_of(INGEST_LUA), len(calls)

    async def pipeline() -> None:
        async with client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.execute_command(*evalsha(sha, call))
            async with deadline(DEADLINE_S):
                check(await pipe.execute(raise_on_error=False), n)

    return Variant(
        "redispy-pipeline-cpacked", "redis-py cluster: pipeline, connections packing in C", n, pipeline
    )


def _raw_connection(client: Redis, sha: str, calls: list[Call]) -> Variant:
    """The pipeline's work without the Pipeline object: pack every command at once, write, read the replies
    from one pooled connection."""
    pool, commands = client.connection_pool, [evalsha(sha, call) for call in calls]

    async def step() -> None:
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # untyped in redis-py
        try:
            await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
            replies: list[Any] = []
            async with deadline(DEADLINE_S):
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as exc:
                        replies.append(exc)
        finally:
            await pool.release(connection)
        check(replies, len(commands))

    return Variant(
        "redispy-connection",
        "redis-py: one pooled connection, pack_commands + read_response",
        len(calls),
        step,
    )


def redis_py_delivery(client: Redis, setup: Redis, batch: int) -> Variant:
    """XREADGROUP COUNT `batch` then one pipeline of a finish EVALSHA per entry, as a worker's round."""
    sha, stream = sha_of(FINISH_LUA), keys.stream(0)

    async def step() -> None:
        read: Any = await client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=batch)
        entries = read[0][1]
        async with client.pipeline(transaction=False) as pipe:
            for entry_id, _ in entries:
                pipe.execute_command(*evalsha(sha, finish_call(entry_id)))
            async with deadline(DEADLINE_S):
                check(await pipe.execute(raise_on_error=False), batch)

    return Variant(
        "redispy-delivery", "redis-py: XREADGROUP + pipeline of finish", batch, step, _filler(setup, batch)
    )


def _filler(setup: Redis, batch: int) -> Callable[[], Awaitable[None]]:
    entry: dict[FieldT, EncodableT] = {"event": orjson.dumps({"pad": "x" * 280}), "attempts": "0"}

    async def fill() -> None:
        async with setup.pipeline(transaction=False) as pipe:
            for _ in range(batch):
                pipe.xadd(keys.stream(0), entry)
            await pipe.execute()

    return fill


# --- valkey-glide -------------------------------------------------------------------------------------------


def glide_module() -> Any | None:
    """valkey-glide's `glide` module, or None when it is not installed (it is not a project dependency)."""
    try:
        return importlib.import_module("glide")
    except ImportError:
        return None


def glide_ingest(glide: Any, client: Any, calls: list[Call], cluster: bool) -> list[Variant]:
    """A non-atomic Batch of EVALSHA (Batch has no invoke_script), and one invoke_script (EVALSHA that loads
    the script itself on NOSCRIPT) or one EVALSHA custom_command per task."""
    sha, n, on = sha_of(INGEST_LUA), len(calls), " cluster" if cluster else ""
    script = glide.Script(INGEST_LUA)
    commands = [evalsha(sha, call) for call in calls]
    encoded: list[list[str | bytes]] = [
        [part if isinstance(part, bytes) else part.encode() for part in command] for command in commands
    ]

    async def batch(queued: list[list[str | bytes]] = commands) -> None:
        pipe = glide.ClusterBatch(is_atomic=False) if cluster else glide.Batch(is_atomic=False)
        for command in queued:
            pipe.custom_command(command)
        check(await client.exec(pipe, raise_on_error=False), n)

    async def batch_of_bytes() -> None:
        await batch(encoded)

    async def invoke() -> None:
        check(
            await asyncio.gather(
                *(client.invoke_script(script, keys=list(c.keys), args=list(c.args)) for c in calls)
            ),
            n,
        )

    async def custom() -> None:
        check(await asyncio.gather(*(client.custom_command(command) for command in commands)), n)

    return [
        Variant("glide-batch", f"glide{on}: Batch(is_atomic=False) of EVALSHA custom_command", n, batch),
        Variant(
            "glide-batch-bytes", f"glide{on}: the same Batch, arguments given as bytes", n, batch_of_bytes
        ),
        Variant("glide-invoke-tasks", f"glide{on}: {n} tasks invoke_script", n, invoke),
        Variant("glide-custom-tasks", f"glide{on}: {n} tasks EVALSHA custom_command", n, custom),
    ]


def glide_delivery(glide: Any, client: Any, setup: Redis, batch: int) -> Variant:
    sha, stream = sha_of(FINISH_LUA), keys.stream(0)
    options = glide.StreamReadGroupOptions(count=batch)

    async def step() -> None:
        read = await client.xreadgroup({stream: ">"}, GROUP, CONSUMER, options)
        pipe = glide.Batch(is_atomic=False)
        for entry_id in read[stream.encode()]:
            pipe.custom_command(evalsha(sha, finish_call(entry_id.decode())))
        check(await client.exec(pipe, raise_on_error=False), batch)

    return Variant(
        "glide-delivery", "glide: xreadgroup + Batch of finish", batch, step, _filler(setup, batch)
    )


@contextlib.asynccontextmanager
async def glide_client(glide: Any, seeds: list[tuple[str, int]], cluster: bool) -> AsyncIterator[Any]:
    addresses = [glide.NodeAddress(host, port) for host, port in seeds]
    if cluster:
        config = glide.GlideClusterClientConfiguration(addresses, request_timeout=int(DEADLINE_S * 1000))
        client = await glide.GlideClusterClient.create(config)
    else:
        config = glide.GlideClientConfiguration(addresses, request_timeout=int(DEADLINE_S * 1000))
        client = await glide.GlideClient.create(config)
    try:
        yield client
    finally:
        await client.close()


# --- running ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    rounds: int = 15
    steps: int = 20
    batch: int = 64
    only: tuple[str, ...] = ()  # variant names (prefixes) to keep; empty: all


async def bench(url: str, options: Options, glide: Any | None = None) -> list[Result]:
    """Every variant against the Redis (or `redis+cluster://` Cluster) at `url`, whose data it may change
    (its scripts loaded, a consumer group made on shard 0's stream); glide's with the `glide` module given
    (`glide_module()`, imported before the event loop runs: the import reads its native library)."""
    settings = Settings(redis_url=url, redis_timeout_s=DEADLINE_S)
    cluster = url.startswith("redis+cluster://")
    client = connect(settings, max_connections=options.batch, epoch_guard=False)
    stock = _stock_client(url, cluster)
    seeds = seeds_of(url)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(client.aclose)
        stack.push_async_callback(stock.aclose)
        await _load_scripts(client)
        calls = ingest_calls(options.batch, shards=8 if cluster else 1)
        variants = redis_py_ingest(client, stock, calls, " cluster" if cluster else "")
        if cluster:
            packed = c_packed_cluster(url)
            stack.push_async_callback(packed.aclose)
            variants.append(redis_py_cluster_c_packed(packed, calls))
        glide_client_ = (
            None if glide is None else await stack.enter_async_context(glide_client(glide, seeds, cluster))
        )
        if glide_client_ is not None:
            variants += glide_ingest(glide, glide_client_, calls, cluster)
        if isinstance(client, Redis) and isinstance(stock, Redis):
            await _group(stock)
            variants.append(redis_py_delivery(client, stock, options.batch))
            if glide_client_ is not None:
                variants.append(glide_delivery(glide, glide_client_, stock, options.batch))
        variants = [v for v in variants if not options.only or v.name.startswith(options.only)]
        return await measure(variants, options.rounds, options.steps)


def seeds_of(url: str) -> list[tuple[str, int]]:
    """host, port of each node named in a redis:// or redis+cluster:// URL (without a password)."""
    hosts = url.split("://", 1)[1].split("/", 1)[0].rpartition("@")[2]
    return [(host, int(port)) for host, _, port in (part.rpartition(":") for part in hosts.split(","))]


def _stock_client(url: str, cluster: bool) -> RedisClient:
    if cluster:
        host, port = seeds_of(url)[0]
        return RedisCluster(host=host, port=port, decode_responses=True)
    return Redis.from_url(url, decode_responses=True, max_connections=64)


async def _load_scripts(client: RedisClient) -> None:
    for source in (INGEST_LUA, FINISH_LUA):
        await client.script_load(source)  # on a cluster redis-py sends it to every primary


async def _group(redis: Redis) -> None:
    await redis.delete(keys.stream(0))
    await redis.xgroup_create(keys.stream(0), GROUP, id="0", mkstream=True)


def table(results: list[Result], baseline: str = "redispy-pipeline") -> str:
    """Medians over rounds, in microseconds per call: the process's CPU (with its spread), the loop thread's,
    and the paired ratio to `baseline` (each round's CPU over the baseline's in the same round)."""
    base = next((r for r in results if r.variant.name == baseline), results[0])
    lines = [
        f"{'variant':<26} {'cpu us/call':>11} {'(min-max)':>15} {'loop us/call':>12}"
        f" {'x ' + base.variant.name:>22}  path"
    ]
    for r in results:
        spread = f"({min(r.cpu_us):.1f}-{max(r.cpu_us):.1f})"
        ratio = statistics.median(cpu / of_base for cpu, of_base in zip(r.cpu_us, base.cpu_us, strict=True))
        lines.append(
            f"{r.variant.name:<26} {statistics.median(r.cpu_us):>11.2f} {spread:>15} "
            f"{statistics.median(r.loop_us):>12.2f} {ratio:>22.2f}  {r.variant.path}"
        )
    return "\n".join(lines)


def environment() -> str:
    versions = []
    for package in ("redis", "hiredis", "valkey-glide", "uvloop"):
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} absent")
    loop = type(asyncio.get_running_loop()).__module__
    return (
        f"python {sys.version.split()[0]}, {', '.join(versions)}, "
        f"HIREDIS_AVAILABLE={redis.utils.HIREDIS_AVAILABLE}, loop {loop}"
    )


@contextlib.contextmanager
def private_server(cluster: bool) -> Iterator[str]:
    """A redis-server (or a local three-primary cluster, one replica each) for this run; yields its URL."""
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="client-bench-") as directory:
        if cluster:
            local = LocalCluster(Path(directory), binary)
            try:
                local.start()
                yield local.url
            finally:
                local.stop()
            return
        port = free_port()
        process = subprocess.Popen(
            server_command(binary, port, Path(directory)), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_ping(port)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_ping(port: int, timeout_s: float = 10.0) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(64).startswith(b"+PONG"):
                return
        time.sleep(0.02)
    raise RuntimeError(f"redis-server did not answer on port {port}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cluster", action="store_true", help="a local Redis Cluster instead of one server")
    parser.add_argument("--only", action="append", default=[], help="variant name prefix (repeatable)")
    parser.add_argument("--no-glide", action="store_true")
    parser.add_argument("--url", help="an existing Redis (its data is changed) instead of a private one")
    ns = parser.parse_args(argv)
    options = Options(ns.rounds, ns.steps, ns.batch, tuple(ns.only))
    glide = None if ns.no_glide else glide_module()

    async def run(url: str) -> None:
        results = await bench(url, options, glide)
        print(environment())
        print(f"{'cluster' if ns.cluster else 'one server'}, {options.rounds} rounds x {options.steps} steps")
        print(table(results))

    try:
        import uvloop

        runner: Callable[[Awaitable[None]], None] = uvloop.run  # type: ignore[assignment]
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    if ns.url:
        runner(run(ns.url))
        return
    with private_server(ns.cluster) as url:
        runner(run(url))


if __name__ == "__main__":
    main()
