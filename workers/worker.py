"""The worker process: its resources, its named loops, and a graceful shutdown with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.core.loop_lag import loop_lag_watched
from gateway.core.metrics_server import metrics_app
from gateway.core.redis import connect, ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.breaker import Breaker
from workers.consumer import Consumer, _wait
from workers.delivery import Deliverer, Sender
from workers.queue_monitor import QueueMonitor
from workers.render import Templates
from workers.retries import Scheduler
from workers.token import TokenCache
from workers.wechat import TokenError, WeChatClient

log = logging.getLogger(__name__)
TOKEN_CHECK_S = 30.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.asynccontextmanager
async def _resources(settings: Settings) -> AsyncIterator[tuple[Redis, aiohttp.ClientSession]]:
    redis = connect(settings, max_connections=settings.worker_concurrency + 8)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=settings.worker_concurrency))
    try:
        yield redis, session
    finally:
        await session.close()
        await redis.aclose()


async def run_worker(settings: Settings, stopping: asyncio.Event, *, name: str | None = None) -> int:
    """Deliver until `stopping` is set, then finish in-flight work within the shutdown deadline.

    Returns the number of deliveries cut off by the deadline (their entries are reclaimed elsewhere).
    """
    name = name or consumer_name()
    async with _resources(settings) as (redis, session):
        scripts = Scripts(settings)
        await _until_redis(redis, settings, stopping)
        client = WeChatClient(session, settings.wechat_base_url, settings.wechat_timeout_s)
        tokens = TokenCache(
            redis,
            scripts,
            client,
            settings.wechat_appid,
            settings.wechat_secret,
            settings.token_refresh_margin_s,
        )
        breaker = Breaker(settings.breaker_failures, settings.breaker_open_s)
        sender = Sender(client, tokens, breaker, settings.wechat_appid)
        deliverer = Deliverer(settings, redis, scripts, sender, Templates.load())
        consumer = Consumer(settings, redis, deliverer, name)
        scheduler = Scheduler(settings, redis, scripts)
        log.info("worker started", extra={"consumer": name, "concurrency": settings.worker_concurrency})
        async with loop_lag_watched(), asyncio.TaskGroup() as loops:
            loops.create_task(consumer.read_loop(stopping), name="reader")
            loops.create_task(consumer.reclaim_loop(stopping), name="reclaimer")
            loops.create_task(scheduler.loop(stopping), name="scheduler")
            loops.create_task(_token_loop(tokens, stopping), name="token-refresher")
            loops.create_task(QueueMonitor(redis, settings.shards).loop(stopping), name="queue-monitor")
        cut = await consumer.drain(settings.shutdown_timeout_s)
        await deliverer.close()
        log.info("worker stopped", extra={"consumer": name, "delivered": consumer.delivered, "cut_off": cut})
        return cut


async def _until_redis(redis: Redis, settings: Settings, stopping: asyncio.Event) -> None:
    """Create the consumer groups, waiting for Redis if it is not up yet."""
    while not stopping.is_set():
        try:
            await ensure_groups(redis, settings.shards)
            return
        except (RedisError, OSError) as exc:
            log.warning("waiting for redis: %s", type(exc).__name__)
            await _wait(stopping, 1.0)


async def _token_loop(tokens: TokenCache, stopping: asyncio.Event) -> None:
    """Keep the shared token fresh ahead of expiry, so deliveries rarely wait for a refresh."""
    while not stopping.is_set():
        try:
            await tokens.get()
        except TokenError as exc:
            log.warning("access token refresh failed: %s", exc.answer.label)
        except Exception as exc:  # Redis trouble: the next round tries again
            log.warning("access token check failed: %s", type(exc).__name__)
        await _wait(stopping, TOKEN_CHECK_S)


def stop_on_signals(stopping: asyncio.Event, deadline_s: float) -> None:
    """First SIGTERM/SIGINT sets `stopping` (finish in-flight work); a second cancels the current task."""
    main = asyncio.current_task()
    if main is None:
        raise RuntimeError("stop_on_signals must be called inside a task")

    def on_signal() -> None:
        if stopping.is_set():
            log.warning("second signal: exiting now")
            main.cancel()
        else:
            log.info("signal received: stopping (deadline %.0f s)", deadline_s)
            stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def serve_worker(settings: Settings, *, shared_metrics_port: bool = False) -> None:
    """`pushgw worker`: run until SIGTERM/SIGINT; a second signal exits at once. `shared_metrics_port`: other
    worker processes listen on the same metrics port (SO_REUSEPORT) and serve the same aggregated metrics."""
    stopping = asyncio.Event()
    stop_on_signals(stopping, settings.shutdown_timeout_s)
    runner = await _start_metrics(settings, shared_metrics_port)
    try:
        await run_worker(settings, stopping)
    finally:
        if runner is not None:
            await runner.cleanup()


async def _start_metrics(settings: Settings, reuse_port: bool) -> web.AppRunner | None:
    if not settings.metrics_port:
        return None
    runner = web.AppRunner(metrics_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port, reuse_port=reuse_port or None)
    await site.start()
    return runner
