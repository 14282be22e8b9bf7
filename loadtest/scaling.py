"""`pushgw bench --scaling`: throughput against the number of gateway and worker processes, on one Redis and
on a local Redis Cluster (three primaries, one replica each), every node with appendfsync always.

For each topology (the cluster also with `PUSHGW_REDIS_WAIT_REPLICAS=1`) and each process count it
measures, with its own load generator process(es): single-event ingress and batch ingress (closed loop, 64
connections per generator, `pushgw gateway --processes N`) and worker delivery from the backlog those runs
left (`pushgw worker --processes N`, counted by the simulator). It prints one table; docs/scaling.md reads
it against the cores the machine has.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from redis.asyncio.cluster import RedisCluster

from gateway.core import keys
from gateway.core.local_servers import free_port, server_binary
from gateway.core.redis import connect, init_epoch
from gateway.core.settings import Settings
from loadtest.bench import (
    CUSTOMERS,
    PUSHGW,
    gateway_env,
    rate_of,
    redis_server,
    run_load,
    server_process,
    sim_delivered,
)
from loadtest.cluster import LocalCluster
from loadtest.payloads import customer_id, openid_of

CLUSTER_SHARDS = 12  # 4 x primaries (docs/scaling.md)


@asynccontextmanager
async def _topology(name: str, directory: Path) -> AsyncIterator[tuple[str, int]]:
    """(Redis URL, shards) of a fresh single Redis or local cluster, stopped on exit."""
    directory.mkdir()
    if name == "single":
        async with redis_server(directory) as url:
            yield url, 1
        return
    cluster = LocalCluster(directory, server_binary())
    try:
        await asyncio.to_thread(cluster.start)
        yield cluster.url, CLUSTER_SHARDS
    finally:
        cluster.stop()


async def _fresh(redis_url: str, shards: int) -> None:
    """Empty every primary, initialise the data epoch (no process runs on it now) and bind the load
    generator's customers."""
    settings = Settings(redis_url=redis_url, shards=shards, redis_timeout_s=10.0)
    redis = connect(settings, epoch_guard=False)
    try:
        if isinstance(redis, RedisCluster):
            await redis.flushall(target_nodes=RedisCluster.PRIMARIES)
        else:
            await redis.flushall()
        await init_epoch(redis, shards)
        async with redis.pipeline(transaction=False) as pipe:
            for index in range(CUSTOMERS):
                binding = keys.binding(customer_id(index))
                pipe.hset(binding, mapping={"openid": openid_of(index), "status": "active"})
            await pipe.execute()
    finally:
        await redis.aclose()


async def _ingress(env: dict[str, str], processes: int, mode: str, seconds: float) -> float:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [*PUSHGW, "gateway", "--port", str(port), "--processes", str(processes)]
    async with server_process(command, env, url + "/healthz"):
        await asyncio.sleep(0.5)  # every process listening
        await asyncio.to_thread(run_load, url, mode, 1.0)  # warm up
        tallies = await asyncio.gather(
            *(asyncio.to_thread(run_load, url, mode, seconds, 64, seed=str(i + 21)) for i in range(processes))
        )
    return sum(rate_of(tally) for tally in tallies)


async def _delivery(env: dict[str, str], processes: int, sim_url: str, seconds: float) -> float:
    async with aiohttp.ClientSession() as session:
        command = [*PUSHGW, "worker", "--processes", str(processes)]
        async with server_process(command, env, sim_url + "/healthz"):
            await asyncio.sleep(1.5)  # start-up, groups and token are not throughput
            start_count, started = await sim_delivered(session, sim_url), time.monotonic()
            await asyncio.sleep(seconds)
            done = await sim_delivered(session, sim_url)
            return (done - start_count) / (time.monotonic() - started)


async def _measure(
    topology: str, processes: int, urls: tuple[str, str], shards: int, seconds: float, wait: int = 0
) -> Any:
    redis_url, sim_url = urls
    await _fresh(redis_url, shards)
    env = {**gateway_env(redis_url, sim_url), "PUSHGW_SHARDS": str(shards)}
    env["PUSHGW_REDIS_WAIT_REPLICAS"] = str(wait)
    single = await _ingress(env, processes, "single", seconds)
    batch = await _ingress(env, processes, "batch", seconds)
    delivery = await _delivery(env, processes, sim_url, seconds)
    row = {"topology": topology + (f"+WAIT{wait}" if wait else ""), "shards": shards, "processes": processes}
    return row | {"single": single, "batch": batch, "delivery": delivery}


async def run_scaling(
    seconds: float = 5.0, processes: tuple[int, ...] = (1, 2), json_path: str | None = None
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="pushgw-scaling-") as tmp:
        for topology in ("single", "cluster"):
            async with _topology(topology, Path(tmp) / topology) as (redis_url, shards):
                sim_port = free_port()
                sim_url = f"http://127.0.0.1:{sim_port}"
                env = gateway_env(redis_url, sim_url)
                sim_command = [*PUSHGW, "sim", "--port", str(sim_port)]
                async with server_process(sim_command, env, sim_url + "/healthz"):
                    for wait in (0, 1) if topology == "cluster" else (0,):
                        for count in processes:
                            urls = (redis_url, sim_url)
                            results.append(await _measure(topology, count, urls, shards, seconds, wait))
    sys.stdout.write(render(results, seconds) + "\n")
    if json_path:
        Path(json_path).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return results


def render(results: list[dict[str, Any]], seconds: float) -> str:
    lines = [
        f"pushgw bench --scaling ({seconds} s a measure; {os.cpu_count()} cores; appendfsync always)",
        f"{'redis':<15}{'shards':>7}{'procs':>7}{'single ev/s':>14}{'batch ev/s':>14}{'delivery ev/s':>15}",
    ]
    for r in results:
        lines.append(
            f"{r['topology']:<15}{r['shards']:>7}{r['processes']:>7}"
            f"{r['single']:>14,.0f}{r['batch']:>14,.0f}{r['delivery']:>15,.0f}"
        )
    return "\n".join(lines)
