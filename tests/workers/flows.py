"""Helpers for delivery tests over a real stack: wait for a status, read a lifecycle, run the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from gateway.core import keys
from gateway.core.local_servers import free_port
from tests.conftest import Stack
from tests.support import KEY_ID, SECRET, eventually, until_ready

StackFactory = Callable[..., Awaitable[Stack]]
Entries = list[tuple[str, dict[str, str]]]  # what XRANGE gives on a decoding client
PUSHGW = str(Path(sys.executable).parent / "pushgw")


async def lifecycle(stack: Stack, event_id: str) -> dict[str, Any]:
    status, body = await stack.client.call("GET", f"/v1/events/{event_id}")
    assert status == 200, body
    view: dict[str, Any] = body
    return view


async def until_status(stack: Stack, event_id: str, status: str, timeout_s: float = 20.0) -> dict[str, Any]:
    """Poll the event's lifecycle until it shows `status`; returns that lifecycle."""

    async def reached() -> bool:
        return await stack.status_of(event_id) == status

    await eventually(reached, timeout_s=timeout_s)
    return await lifecycle(stack, event_id)


async def pending(redis: Redis, shards: int = 1) -> int:
    """Entries read but not acknowledged, over every shard's stream."""
    total = 0
    for shard in range(shards):
        summary: Any = await redis.xpending(keys.stream(shard), keys.GROUP)
        total += int(summary["pending"])
    return total


async def backlog(redis: Redis, shards: int = 1) -> int:
    """Work not yet finished: pending entries, unread entries and scheduled retries."""
    total = await pending(redis, shards)
    for shard in range(shards):
        groups: Any = await redis.xinfo_groups(keys.stream(shard))
        total += sum(int(group.get("lag") or 0) for group in groups)
        total += int(await redis.zcard(keys.retries(shard)))
    return total


async def scored(redis: Redis, key: str) -> list[tuple[str, float]]:
    """A sorted set's members with their scores, lowest first."""
    pairs: Any = await redis.zrange(key, 0, -1, withscores=True)
    return [(str(member), float(score)) for member, score in pairs]


def pushgw_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `pushgw` subprocess: ours without other PUSHGW_* settings, plus `extra`. A gateway
    stops at once on SIGTERM here (no drain grace: tests stop gateways often) unless `extra` sets one."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PUSHGW_")}
    return {**env, "PUSHGW_REDIS_URL": redis_url, "PUSHGW_DRAIN_GRACE_S": "0", **extra}


def start_gateway(command: list[str], redis_url: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
    """`command gateway` as a subprocess on a free loopback port with the fixture key and `extra` settings;
    returns it and its URL (not yet ready: see tests.support.until_ready)."""
    port = free_port()
    env = pushgw_env(redis_url, PUSHGW_API_KEYS=f"{KEY_ID}:{SECRET}", PUSHGW_LOG_LEVEL="WARNING", **extra)
    process = subprocess.Popen(
        [*command, "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


@asynccontextmanager
async def ready_gateways(started: list[tuple[subprocess.Popen[bytes], str]]) -> AsyncIterator[list[str]]:
    """The URLs of gateway subprocesses (from `start_gateway`) once each is ready; each stopped after
    (SIGTERM, killed if it outlives 10 s)."""
    try:
        async with aiohttp.ClientSession() as session:
            for process, url in started:
                await until_ready(session, process, url)
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def kill_left(processes: list[asyncio.subprocess.Process]) -> None:
    """Kill the processes a test left running."""
    for process in processes:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def pushgw(redis_url: str, *args: str) -> tuple[int, str]:
    """Run the real `pushgw` command to completion; returns (exit status, stdout)."""
    process = await asyncio.create_subprocess_exec(
        PUSHGW,
        *args,
        env=pushgw_env(redis_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    if process.returncode != 0:
        sys.stderr.write(err.decode())
    return process.returncode, out.decode()


async def record_statuses(redis: Redis, events: list[dict[str, Any]], shards: int = 1) -> dict[str, str]:
    """event id -> status, read straight from the records (one round trip for many events)."""
    async with redis.pipeline(transaction=False) as pipe:
        for event in events:
            shard = keys.shard_of(event["customer_id"], shards)
            pipe.hget(keys.event(shard, "cbs", event["event_id"]), "status")
        found = await pipe.execute()
    return {event["event_id"]: str(status) for event, status in zip(events, found, strict=True)}
