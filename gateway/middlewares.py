"""The one error shape (client faults are 4xx, a client gone mid-request 499, only our bugs 500), request ids
bound to logs, and RED metrics per route."""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import RedisError

from gateway.core import metrics
from gateway.core.errors import (
    ApiError,
    BadRequest,
    ClientClosedRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
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

_HTTP_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
}


def error_response(error: ApiError) -> web.Response:
    response = respond(error.body(), status=error.status, headers=error.headers())
    if error.status == RequestTimeout.status:  # a late body is abandoned with its connection
        response.force_close()
    return response


def _from_http(exc: web.HTTPException) -> ApiError:
    kind = _HTTP_ERRORS.get(exc.status, BadRequest)
    messages = {404: "no such resource", 405: "method not allowed", 413: "request body too large"}
    return kind(messages.get(exc.status, exc.reason))


async def _answered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as {"error": {...}}. A 500 is a bug: logged with the route, body never shown."""
    try:
        return await handler(request)
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
    except (ConnectionError, RequestPayloadError) as exc:
        return _body_broken(request, exc)
    except Exception:
        return _internal(request)


def _body_broken(request: web.Request, exc: Exception) -> web.Response:
    """A handler that reads its body itself met a closed connection (499: the client's doing, neither
    logged nor a 5xx) or broken framing (400); a ConnectionError while the client is still there is ours."""
    if request.transport is None or request.transport.is_closing():
        return error_response(ClientClosedRequest("the client closed the connection"))
    if isinstance(exc, RequestPayloadError):
        return error_response(BadRequest("the request body's framing is broken", code="malformed_body"))
    return _internal(request)


def _internal(request: web.Request) -> web.Response:
    log.exception("unhandled error on %s %s", request.method, _route(request))
    return respond({"error": {"code": "internal", "message": "internal error"}}, status=500)


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware (each layer costs every request): bind a request id (X-Request-Id, or a new one),
    answer every failure in the error shape, and count and time each request by route."""
    request_id = request.headers.get("X-Request-Id", "")[:64] or f"{_ID_PREFIX}-{next(_ID_SEQUENCE):x}"
    route = _route(request)
    started = time.perf_counter()
    status = 500
    with bound(request_id=request_id):
        try:
            response = await _answered(request, handler)
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
