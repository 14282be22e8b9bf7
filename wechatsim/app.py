"""The simulator's app factory: routes, state under a typed key, the outage switch, the /sim error shape."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from wechatsim.config import SimConfig
from wechatsim.handlers import METRICS_KEY, STATE_KEY, BadRequest, json_response, routes
from wechatsim.metrics import metrics_registry
from wechatsim.state import Clock, SimState

__all__ = ["STATE_KEY", "SimConfig", "create_app"]

logger = logging.getLogger(__name__)

_ENDPOINTS = {
    "/cgi-bin/token": "token",
    "/cgi-bin/stable_token": "stable_token",
    "/cgi-bin/message/template/send": "send",
    "/cgi-bin/template/get_all_private_template": "templates",
}


async def _caller(request: web.Request, endpoint: str, state: SimState) -> str | None:
    """The appid a WeChat API call is made for: named by the token calls, else the access token's app."""
    if endpoint == "token":
        return request.query.get("appid")
    if endpoint == "stable_token":
        try:
            payload = orjson.loads(await request.read())  # aiohttp keeps the body for the handler
        except orjson.JSONDecodeError:
            return None
        appid = payload.get("appid") if isinstance(payload, dict) else None
        return appid if isinstance(appid, str) else None
    _, appid = state.tokens.check(request.query.get("access_token") or "", state.clock())
    return appid


@web.middleware
async def _wechat_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every WeChat API call, and answer each with HTTP 503 while the outage fault is on (the calling
    app's own fault set if it has one, else the global one)."""
    endpoint = _ENDPOINTS.get(request.path)
    if endpoint is None:
        return await handler(request)
    state = request.app[STATE_KEY]
    state.stats.calls[endpoint] += 1
    appid = await _caller(request, endpoint, state) if state.app_faults else None
    if state.faults_for(appid).outage:
        if endpoint == "send":
            state.stats.errcodes["http_5xx"] += 1
        elif endpoint != "templates":
            state.stats.token_errcodes["http_5xx"] += 1
        return web.Response(status=503, text="503 Service Unavailable")
    return await handler(request)


@web.middleware
async def _error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bad input answers 400 `{"error": ...}`; a bug answers 500 in the same shape and is logged."""
    try:
        return await handler(request)
    except BadRequest as exc:
        return json_response({"error": str(exc)}, 400)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unhandled error in %s %s", request.method, request.path)
        return json_response({"error": "internal error"}, 500)


async def _callback_poster(app: web.Application) -> AsyncIterator[None]:
    """The tasks posting finish events, with their own client session; both end with the app."""
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(app[STATE_KEY].callbacks.run(session), name="wechatsim-callbacks")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def create_app(config: SimConfig, *, clock: Clock = time.time) -> web.Application:
    """The simulator as an aiohttp app; `clock` (unix seconds) is injectable so tests can move time."""
    app = web.Application(middlewares=[_error_middleware, _wechat_middleware])
    state = SimState(config, clock)
    app[STATE_KEY] = state
    app[METRICS_KEY] = metrics_registry(state)
    app.add_routes(routes)
    app.cleanup_ctx.append(_callback_poster)
    return app
