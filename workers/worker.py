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
from redis.exceptions import RedisError

from gateway.core.loop_lag import loop_lag_watched
from gateway.core.metrics_server import metrics_app
from gateway.core.redis import RedisClient, connect, ensure_groups
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.breaker import Breaker
from workers.consumer import _wait
from workers.delivery import Deliverer, Sender, delivery_consumer
from workers.notices import Notifier, notice_consumer
from workers.queue_monitor import QueueMonitor
from workers.render import Templates
from workers.retries import Scheduler
from workers.throttle import Throttle
from workers.token import TokenCache
from workers.wechat import TokenError, WeChatClient

log = logging.getLogger(__name__)
TOKEN_CHECK_S = 30.0


def consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@contextlib.asynccontextmanager
async def _resources(settings: Settings) -> AsyncIterator[tuple[RedisClient, aiohttp.ClientSession]]:
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
        templates = Templates.load()
        default, *accounts = _senders(settings, redis, scripts, client, templates)
        deliverer = Deliverer(settings, redis, scripts, default, templates, accounts=accounts)
        consumer = delivery_consumer(settings, redis, deliverer, name)
        notifier = Notifier(settings, redis, scripts)
        notices = notice_consumer(settings, redis, notifier, name)
        scheduler = Scheduler(settings, redis, scripts)
        log.info("worker started", extra={"consumer": name, "concurrency": settings.worker_concurrency})
        async with loop_lag_watched(), asyncio.TaskGroup() as loops:
            loops.create_task(consumer.read_loop(stopping), name="reader")
            loops.create_task(consumer.reclaim_loop(stopping), name="reclaimer")
            loops.create_task(notices.read_loop(stopping), name="notice-reader")
            loops.create_task(notices.reclaim_loop(stopping), name="notice-reclaimer")
            loops.create_task(scheduler.loop(stopping), name="scheduler")
            tokens = [sender.tokens for sender in (default, *accounts)]
            loops.create_task(_token_loop(tokens, stopping), name="token-refresher")
            loops.create_task(QueueMonitor(redis, settings.shards).loop(stopping), name="queue-monitor")
        deadline_s = settings.shutdown_timeout_s
        cut = sum(await asyncio.gather(consumer.drain(deadline_s), notices.drain(deadline_s)))
        await deliverer.close()
        await notifier.close()
        handled = {"delivered": consumer.handled, "notices": notices.handled}
        log.info("worker stopped", extra={"consumer": name, **handled, "cut_off": cut})
        return cut


async def _until_redis(redis: RedisClient, settings: Settings, stopping: asyncio.Event) -> None:
    """Create the consumer groups, waiting for Redis if it is not up yet."""
    while not stopping.is_set():
        try:
            await ensure_groups(redis, settings.shards)
            return
        except (RedisError, OSError) as exc:
            log.warning("waiting for redis: %s", type(exc).__name__)
            await _wait(stopping, 1.0)


def _senders(
    settings: Settings, redis: RedisClient, scripts: Scripts, client: WeChatClient, templates: Templates
) -> list[Sender]:
    """One Sender per official account, the default (PUSHGW_WECHAT_APPID) first: each has its own token
    cache and circuit (one breaker keyed by appid) and its own template ids; they share the HTTP client."""
    breaker = Breaker(settings.breaker_failures, settings.breaker_open_s)
    margin_s = settings.token_refresh_margin_s
    accounts = {settings.wechat_appid: settings.wechat_secret, **settings.wechat_accounts}
    senders = []
    for appid, secret in accounts.items():
        tokens = TokenCache(redis, scripts, client, appid, secret, margin_s)
        ids = settings.wechat_templates.get(appid)
        throttle = Throttle(redis, scripts, appid, settings.wechat_max_sends_per_s)
        own_templates = templates.with_ids(ids) if ids else None
        senders.append(Sender(client, tokens, breaker, appid, own_templates, throttle))
    return senders


async def _token_loop(caches: list[TokenCache], stopping: asyncio.Event) -> None:
    """Keep each account's shared token fresh ahead of expiry, so deliveries rarely wait for a refresh.
    One account's failure is logged and does not hold up the others."""
    while not stopping.is_set():
        await asyncio.gather(*(_check_token(tokens) for tokens in caches))
        await _wait(stopping, TOKEN_CHECK_S)


async def _check_token(tokens: TokenCache) -> None:
    try:
        await tokens.get()
    except TokenError as exc:
        log.warning("access token refresh failed: %s", exc.answer.label, extra={"appid": tokens.appid})
    except Exception as exc:  # Redis trouble: the next round tries again
        log.warning("access token check failed: %s", type(exc).__name__, extra={"appid": tokens.appid})


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
