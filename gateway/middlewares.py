"""The one error shape, bounded admission of ingest requests, request ids bound to logs, and RED metrics
per route."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import RedisError

from gateway.context import GATEWAY
from gateway.core import metrics
from gateway.core.errors import (
    ApiError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from gateway.core.logs import bound
from gateway.responses import respond

log = logging.getLogger(__name__)
# request ids unique across processes and restarts without a uuid4 per request (a hot-path cost)
_ID_PREFIX = os.urandom(6).hex()
_ID_SEQUENCE = itertools.count(1)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_INGEST_PATHS = frozenset({"/v1/events", "/v1/events/batch"})

_HTTP_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_response(error: ApiError) -> web.Response:
    return respond(error.body(), status=error.status, headers=error.headers())


def _from_http(exc: web.HTTPException) -> ApiError:
    kind = _HTTP_ERRORS.get(exc.status, BadRequest)
    messages = {404: "no such resource", 405: "method not allowed", 413: "request body too large"}
    return kind(messages.get(exc.status, exc.reason))


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as {"error": {...}}. A 500 is a bug: logged with the route, body never shown.
    Ingest requests beyond the admission limit are refused here, before their body is read."""
    try:
        return await _admitted(request, handler)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(_from_http(exc))
        if "Allow" in exc.headers:  # a 405 must name the methods the resource allows (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except (RedisError, TimeoutError) as exc:
        log.warning("redis unavailable: %s", type(exc).__name__)
        return error_response(ServiceUnavailable("the queue is unavailable, retry later", retry_after_s=1))
    except Exception:
        log.exception("unhandled error on %s %s", request.method, _route(request))
        body = {"error": {"code": "internal", "message": "internal error"}}
        return respond(body, status=500)


async def _admitted(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method != "POST" or request.path not in _INGEST_PATHS or GATEWAY not in request.app:
        return await handler(request)
    with request.app[GATEWAY].admission.admitted():
        return await handler(request)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind a request id (X-Request-Id, or a new one) and count and time each request by route."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or f"{_ID_PREFIX}-{next(_ID_SEQUENCE):x}"
    route = _route(request)
    started = time.perf_counter()
    status = 500
    with bound(request_id=request_id):
        try:
            response = await handler(request)
            status = response.status
            response.headers["X-Request-Id"] = request_id
            return response
        finally:
            method = request.method if request.method in metrics.HTTP_METHODS else "other"  # bounded labels
            metrics.child(metrics.HTTP_REQUESTS, route, method, str(status)).inc()
            metrics.child(metrics.HTTP_DURATION, route).observe(time.perf_counter() - started)


def _route(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"
