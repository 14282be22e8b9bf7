"""The worker process: its resources, its named loops, and a graceful shutdown with a deadline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from gateway.core.loop_lag import loop_lag_watched
from gateway.core.metrics_server import metrics_app
from gateway.core.redis import DataLost, RedisClient, connect, ensure_groups, refusal
from gateway.core.scripts import Scripts
from gateway.core.settings import Settings
from workers.archive import run_archiver
from workers.breaker import Breaker
from workers.consumer import Consumer, sleep_or_stop
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
REDIS_RETRY_S = 1.0


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


async def run_worker(
    settings: Settings,
    stopping: asyncio.Event,
    *,
    name: str | None = None,
    now: asyncio.Event | None = None,
) -> int:
    """Deliver until `stopping` is set, then finish in-flight work within the shutdown deadline, or until
    `now` is set (a second signal): what is still in flight then is cut off at once.

    Returns the number of deliveries and notices cut off (their entries stay pending, unacknowledged, and
    another worker claims them once idle PUSHGW_RECLAIM_IDLE_S). Logs one summary line, `worker stopped`,
    with the outcomes of what this worker handled, counted by what they were.
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
            tokens = [sender.tokens for sender in (default, *accounts)]
            named = [
                loops.create_task(consumer.read_loop(stopping), name="reader"),
                loops.create_task(consumer.reclaim_loop(stopping), name="reclaimer"),
                loops.create_task(notices.read_loop(stopping), name="notice-reader"),
                loops.create_task(notices.reclaim_loop(stopping), name="notice-reclaimer"),
                loops.create_task(scheduler.loop(stopping), name="scheduler"),
                loops.create_task(_token_loop(tokens, stopping), name="token-refresher"),
                loops.create_task(QueueMonitor(redis, settings.shards).loop(stopping), name="queue-monitor"),
            ]
            if settings.archive_url:  # final states into PostgreSQL (workers/archive.py): its own group
                archiver = run_archiver(settings, redis, name, stopping)
                named.append(loops.create_task(archiver, name="archiver"))
            if now is not None:
                loops.create_task(_cut_short(now, named), name="cut-short")
        cut = await _drain([consumer, notices], settings.shutdown_timeout_s, now)
        await deliverer.close()
        await notifier.close()
        log.info("worker stopped", extra={"consumer": name, **summary(deliverer, notifier), "cut_off": cut})
        return cut


async def _cut_short(now: asyncio.Event, loops: list[asyncio.Task[None]]) -> None:
    """Cancel the loops when `now` is set before they returned (a loop may wait for a free slot, which a
    slow delivery holds): a second signal does not wait for them."""
    cut = asyncio.ensure_future(now.wait())
    try:
        running: set[asyncio.Future[Any]] = set(loops)
        while running and not cut.done():
            _, running = await asyncio.wait(running | {cut}, return_when=asyncio.FIRST_COMPLETED)
            running.discard(cut)
        if cut.done():
            for loop in loops:
                loop.cancel()
    finally:
        cut.cancel()


async def _drain(consumers: list[Consumer], deadline_s: float, now: asyncio.Event | None) -> int:
    """Wait for the consumers' in-flight work within the deadline, or until `now` is set: then what is
    still in flight is cut off at once. Returns how many were cut off (left pending for reclaim)."""
    draining = asyncio.ensure_future(asyncio.gather(*(c.drain(deadline_s) for c in consumers)))
    waits: set[asyncio.Future[Any]] = {draining}
    if now is not None:
        waits.add(asyncio.ensure_future(now.wait()))
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits - {draining}:
            waiting.cancel()
    if draining.done():
        return sum(draining.result())
    draining.cancel()  # it only waits: its tasks are cut off below
    with contextlib.suppress(asyncio.CancelledError):
        await draining
    return sum([await c.drain(0) for c in consumers])


def summary(deliverer: Deliverer, notifier: Notifier) -> dict[str, object]:
    """The shutdown line's counts: `delivered` (sent to WeChat), `deliveries` (every outcome by what it was:
    delivered, retrying, failed, dead_lettered, no_binding, already_final) and `notices` (by outcome)."""
    outcomes = dict(sorted(deliverer.outcomes.items()))
    return {
        "delivered": outcomes.get("delivered", 0),
        "deliveries": outcomes,
        "notices": dict(sorted(notifier.outcomes.items())),
    }


async def _until_redis(redis: RedisClient, settings: Settings, stopping: asyncio.Event) -> None:
    """Create the consumer groups, waiting while Redis is down or holds no data epoch (or another one than
    this worker accepts): nothing is created in a Redis that lost its data or was never initialised, and
    the worker goes on by itself once the epoch is there (the old data restored, or `pushgw epoch init`)."""
    waiting_for = ""
    while not stopping.is_set():
        try:
            await ensure_groups(redis, settings.shards)
            if waiting_for:
                log.warning("redis ready again: starting")
            return
        except (RedisError, OSError) as exc:
            why = str(exc) if isinstance(exc, DataLost) else refusal(exc) or type(exc).__name__
            if why != waiting_for:  # once per reason, not every second
                log.warning("waiting for redis (retrying every %.0f s): %s", REDIS_RETRY_S, why)
            waiting_for = why
            await sleep_or_stop(stopping, REDIS_RETRY_S)


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
        per_second = settings.wechat_max_sends_per_s
        throttle = Throttle(redis, scripts, appid, per_second) if per_second else None  # None: no limit
        own_templates = templates.with_ids(ids) if ids else None
        senders.append(Sender(client, tokens, breaker, appid, own_templates, throttle))
    return senders


async def _token_loop(caches: list[TokenCache], stopping: asyncio.Event) -> None:
    """Keep each account's shared token fresh ahead of expiry, so deliveries rarely wait for a refresh.
    One account's failure is logged and does not hold up the others."""
    while not stopping.is_set():
        await asyncio.gather(*(_check_token(tokens) for tokens in caches))
        await sleep_or_stop(stopping, TOKEN_CHECK_S)


async def _check_token(tokens: TokenCache) -> None:
    try:
        await tokens.get()
    except TokenError as exc:
        log.warning("access token refresh failed: %s", exc.answer.label, extra={"appid": tokens.appid})
    except Exception as exc:  # Redis trouble: the next round tries again
        log.warning("access token check failed: %s", type(exc).__name__, extra={"appid": tokens.appid})


def stop_on_signals(stopping: asyncio.Event, deadline_s: float) -> asyncio.Event:
    """First SIGTERM/SIGINT sets `stopping` (finish in-flight work within the deadline); a second sets the
    returned event: cut off what is in flight now (left pending for reclaim), log the summary, exit."""
    now = asyncio.Event()

    def on_signal() -> None:
        if stopping.is_set():
            log.warning("second signal: cutting off what is in flight (left pending for reclaim)")
            now.set()
        else:
            log.info("signal received: stopping (deadline %.0f s)", deadline_s)
            stopping.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    return now


async def serve_worker(settings: Settings, *, shared_metrics_port: bool = False) -> None:
    """`pushgw worker`: run until SIGTERM/SIGINT; a second signal cuts off what is in flight and exits (0
    either way; the summary line says what was cut off). `shared_metrics_port`: other
    worker processes listen on the same metrics port (SO_REUSEPORT) and serve the same aggregated metrics."""
    stopping = asyncio.Event()
    now = stop_on_signals(stopping, settings.shutdown_timeout_s)
    runner = await _start_metrics(settings, shared_metrics_port)
    try:
        await run_worker(settings, stopping, now=now)
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
