"""create_app(settings): the only way to build the ingress application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from gateway import middlewares, openapi
from gateway.archived import archive_context
from gateway.auth import Verifier
from gateway.context import GATEWAY, Gateway
from gateway.core.loop_lag import loop_lag_watched
from gateway.core.metrics_server import metrics_handler
from gateway.core.redis import connect
from gateway.core.scripts import Scripts
from gateway.core.settings import ConfigError, Settings
from gateway.handlers import bindings, customers, erasure, events, health, wechat_callback
from gateway.ingest import Ingestor
from gateway.readiness import Readiness

log = logging.getLogger(__name__)
READINESS_INTERVAL_S = 5.0
CANCEL_AGAIN_S = 1.0
# Connections a listener holds until the process accepts them. aiohttp's 128 overflows when a burst of
# clients connects while the loop is busy; the kernel then drops their SYNs and each waits 1 s to retry.
LISTEN_BACKLOG = 2048


def create_app(settings: Settings) -> web.Application:
    """Raises ConfigError when there are no API keys and the ingress is not explicitly open."""
    if not settings.api_keys and not settings.open_ingress:
        raise ConfigError("PUSHGW_API_KEYS is empty: set keys, or PUSHGW_OPEN_INGRESS=true for development")
    app = web.Application(
        middlewares=[middlewares.observe],
        client_max_size=settings.max_batch_body_bytes,
    )
    app.cleanup_ctx.append(_gateway_context(settings))
    app.cleanup_ctx.append(archive_context(settings))  # the archive's pool, with PUSHGW_ARCHIVE_URL only
    app.router.add_post("/v1/events", events.post_event)
    app.router.add_post("/v1/events/batch", events.post_batch)
    app.router.add_get("/v1/events/{event_id}", events.get_event, allow_head=False)
    app.router.add_post("/v1/bindings/batch", bindings.post_bindings)
    app.router.add_put("/v1/bindings/{customer_id}", bindings.put_binding)
    app.router.add_get("/v1/bindings/{customer_id}", bindings.get_binding, allow_head=False)
    app.router.add_delete("/v1/bindings/{customer_id}", bindings.delete_binding)
    app.router.add_put("/v1/customers/{customer_id}/preferences", customers.put_preferences)
    app.router.add_get("/v1/customers/{customer_id}/preferences", customers.get_preferences, allow_head=False)
    app.router.add_get("/v1/customers/{customer_id}/events", customers.get_customer_events, allow_head=False)
    app.router.add_delete("/v1/customers/{customer_id}", erasure.delete_customer)
    app.router.add_get("/wechat/callback", wechat_callback.verify_url, allow_head=False)
    app.router.add_post("/wechat/callback", wechat_callback.receive_event)
    app.router.add_get("/healthz", health.healthz, allow_head=False)
    app.router.add_get("/readyz", health.readyz, allow_head=False)
    if not settings.gateway_metrics_port:  # else /metrics has a listener of its own (gateway/server.py)
        app.router.add_get("/metrics", metrics_handler, allow_head=False)
    app.router.add_get("/openapi.json", openapi.serve, allow_head=False)
    return app


def _gateway_context(settings: Settings):  # type: ignore[no-untyped-def]
    async def context(app: web.Application) -> AsyncIterator[None]:
        if settings.open_ingress:
            log.warning("ingress is OPEN: requests are accepted without signatures (development only)")
        redis = connect(settings, max_connections=256)
        scripts = Scripts(settings)
        readiness = Readiness(require_durable=settings.require_durable_redis)
        ingestor = Ingestor(
            redis,
            scripts,
            settings.redis_timeout_s,
            coalesce=settings.ingest_coalesce,
            wait_replicas=settings.redis_wait_replicas,
            shards=settings.shards,
            claim_ttl_s=settings.event_ttl_s,
        )
        verifier = Verifier(
            settings.api_keys,
            settings.api_key_scopes,
            settings.signature_window_s,
            open_ingress=settings.open_ingress,
        )
        app[GATEWAY] = Gateway(settings, redis, scripts, ingestor, verifier, readiness)
        await readiness.refresh(redis)
        checker = asyncio.create_task(_keep_checking(readiness, app[GATEWAY]), name="readiness-check")
        try:
            async with loop_lag_watched():
                yield
        finally:
            await _cancelled(checker)
            await ingestor.close()
            await redis.aclose()

    return context


async def _cancelled(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait for its end, cancelling again while it runs: a cancellation that lands as an
    asyncio.timeout inside it expires becomes a TimeoutError on Python 3.11, which the readiness check
    catches, and a single cancel then left `pushgw gateway` hanging on SIGTERM (seen under load)."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_S)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _keep_checking(readiness: Readiness, gateway: Gateway) -> None:
    while True:
        await asyncio.sleep(READINESS_INTERVAL_S)
        await readiness.refresh(gateway.redis)
