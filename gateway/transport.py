"""How the ingress holds its connections: deadlines, a per-process connection limit that closes the connection
stalled longest, and the HTTP parser's refusals answered in the one error shape.

aiohttp makes one RequestHandler per connection; `GatewayRunner` (a web.AppRunner) serves the app through a
web.Server whose handlers are `GuardedConnection`s. Between two answers a connection is *stalled* (waiting for
a request head, or for the rest of a body) or *busy* (its request is complete and being answered). Bounds:

- idle: no complete request head within PUSHGW_IDLE_TIMEOUT_S of opening or of the last answer: closed
  (aiohttp's keep-alive timer; a partial head does not restart it);
- headers: complete within PUSHGW_HEADER_TIMEOUT_S of their first byte, or closed (a slowloris);
- body: complete within PUSHGW_BODY_TIMEOUT_S of the handler asking for it (requests.read_body: 408, then
  closed); the unread rest of a body answered early is drained for at most as long (aiohttp's lingering);
- count: at most PUSHGW_MAX_CONNECTIONS open (less when the file limit is lower); a new connection past it
  closes the connection whose stall began earliest, never a busy one, and is itself closed only when none
  is stalled. So slow and idle clients cannot starve signed traffic: they are the first to go.

A request the parser refuses (bad framing, a bad Content-Length or chunk, an oversized line, bytes that are
not HTTP) is answered in the one error shape (400, or 431 for a line too large), and neither the answer nor
any log line holds its bytes: aiohttp's own answer would echo them, and log them at ERROR. No answer names
the server software's version.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from aiohttp import hdrs, web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from gateway.core import metrics
from gateway.core.errors import ApiError, BadRequest, HeadersTooLarge, RequestTimeout
from gateway.core.settings import Settings
from gateway.responses import respond

log = logging.getLogger(__name__)
SERVER_NAME = "pushgw"  # the Server header: no software version to look up vulnerabilities by
# file descriptors kept back from the connection limit: the Redis pool (256), listeners, logs, the archive
FD_RESERVE = 320
MIN_CONNECTIONS = 16


class ConnectionTable:
    """The open connections of one server, and the stalled ones in the order their stall began."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: set[GuardedConnection] = set()
        self._stalled: OrderedDict[GuardedConnection, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, connection: GuardedConnection) -> bool:
        """Count a new connection in, as stalled. At the limit the connection stalled longest is closed for
        it; False (the caller closes the new one) only when none is stalled."""
        if len(self._open) >= self.limit:
            if not self._stalled:
                metrics.child(metrics.INGRESS_CONNECTIONS_CLOSED, "refused").inc()
                return False
            oldest, _ = self._stalled.popitem(last=False)
            self._forget(oldest)
            metrics.child(metrics.INGRESS_CONNECTIONS_CLOSED, "evicted").inc()
            oldest.force_close()
        self._open.add(connection)
        self._stalled[connection] = None
        metrics.INGRESS_CONNECTIONS.inc()
        return True

    def stalled(self, connection: GuardedConnection) -> None:
        """The connection waits for the client from now on (it goes last in the eviction order)."""
        if connection in self._open:
            self._stalled.pop(connection, None)
            self._stalled[connection] = None

    def busy(self, connection: GuardedConnection) -> None:
        """The connection's request is complete: it is not closed for others until it was answered."""
        self._stalled.pop(connection, None)

    def closed(self, connection: GuardedConnection) -> None:
        if connection in self._open:
            self._forget(connection)

    def _forget(self, connection: GuardedConnection) -> None:
        self._open.discard(connection)
        self._stalled.pop(connection, None)
        metrics.INGRESS_CONNECTIONS.dec()


class GuardedConnection(RequestHandler):
    """One ingress connection: aiohttp's handler plus the header deadline, its place in the table, and the
    parser's refusals answered in the one error shape."""

    def __init__(
        self, manager: GatewayServer, *, table: ConnectionTable, header_timeout_s: float, **kwargs: Any
    ) -> None:
        super().__init__(manager, **kwargs)
        self._table = table
        self._header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # since the connection opened or its last answer
        self._body: StreamReader | None = None  # the body of the request in hand, while it still arrives
        self._framing_broken = False

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head and self._head_timer is None and data:
            self._head_timer = self._loop.call_later(self._header_timeout_s, self._head_late)
        super().data_received(data)
        body = self._body
        if body is None:
            return
        if body.is_eof():
            self._body = None
            self._table.busy(self)
        elif self._messages and not isinstance(self._messages[-1][0], RawRequestMessage):
            # the parser failed inside this body (a bad chunk): aiohttp queues its error behind the request
            # and leaves the body waiting forever; fail the body now, so its handler answers 400 at once
            self._body = None
            self._framing_broken = True
            body.set_exception(RequestPayloadError("the request's framing broke"))

    def dispatched(self, payload: StreamReader) -> None:
        """A request head was parsed and goes to the app (called as its request is made)."""
        self._awaiting_head = False
        self._stop_head_timer()
        if payload.is_eof():
            self._table.busy(self)
        else:
            self._body = payload

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        if not resp.prepared and hdrs.SERVER not in resp.headers:
            resp.headers[hdrs.SERVER] = SERVER_NAME
        answered = await super().finish_response(request, resp, start_time)
        self._body = None
        self._awaiting_head = True
        self._stop_head_timer()
        self._table.stalled(self)
        if self._framing_broken or (resp.status == RequestTimeout.status and not request.content.is_eof()):
            self.force_close()  # answered: close now instead of draining a slow or broken body further
        return answered

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse (400) or whose handler raised past every
        middleware (500, a bug). Its message, and the exception's, hold request bytes: neither is used."""
        if status < 500:
            error = _refusal(exc)
            log.debug("refused a malformed request: %s", type(exc).__name__)
            metrics.child(metrics.HTTP_REQUESTS, "malformed", "other", str(error.status)).inc()
            body, status = error.body(), error.status
        else:
            log.error("unhandled %s answering a request", type(exc).__name__)
            body = {"error": {"code": "internal", "message": "internal error"}}
        if request.writer.output_size > 0:  # as aiohttp's: part of an answer is out, the connection is lost
            raise ConnectionError("an answer was partly sent; no error answer can follow it")
        response = respond(body, status=status, headers={hdrs.SERVER: SERVER_NAME})
        response.force_close()
        return response

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        if self._body is not None:  # also before its handler ran: aiohttp fails only a running one's body
            self._body.set_exception(ConnectionResetError("the client closed the connection"))
            self._body = None
        super().connection_lost(exc)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head and self.transport is not None:
            metrics.child(metrics.INGRESS_CONNECTIONS_CLOSED, "header_timeout").inc()
            self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def _refusal(exc: BaseException | None) -> ApiError:
    too_large = isinstance(exc, LineTooLong) or (
        isinstance(exc, BadHttpMessage) and exc.message.startswith("Too many headers")
    )
    if too_large:
        return HeadersTooLarge("the request line or a header field is too large, or there are too many")
    return BadRequest("malformed HTTP request", code="malformed_request")


RequestFactory = Callable[..., web.BaseRequest]


class GatewayServer(web.Server):
    """aiohttp's server (the protocol factory of a listener) making GuardedConnections in one table."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Any],
        *,
        request_factory: RequestFactory,
        table: ConnectionTable,
        header_timeout_s: float,
        handler_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(handler, request_factory=_dispatching(request_factory))
        self.table = table
        self._header_timeout_s = header_timeout_s
        self._handler_kwargs = handler_kwargs
        self._running_loop = asyncio.get_running_loop()

    def __call__(self) -> GuardedConnection:
        return GuardedConnection(
            self,
            loop=self._running_loop,
            table=self.table,
            header_timeout_s=self._header_timeout_s,
            **self._handler_kwargs,
        )

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if isinstance(handler, GuardedConnection) and not self.table.opened(handler):
            handler.force_close()

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        if isinstance(handler, GuardedConnection):
            self.table.closed(handler)


def _dispatching(factory: RequestFactory) -> RequestFactory:
    """The app's request factory, telling the connection that a request head arrived."""

    def make(message: Any, payload: StreamReader, protocol: RequestHandler, *rest: Any) -> web.BaseRequest:
        request = factory(message, payload, protocol, *rest)
        if isinstance(protocol, GuardedConnection):
            protocol.dispatched(payload)
        return request

    return make


class GatewayRunner(web.AppRunner):
    """web.AppRunner for the gateway's listeners: its connections are guarded under `settings`' bounds.
    Starting it starts the app (its cleanup_ctx); give it to one or more sites as usual."""

    def __init__(self, app: web.Application, settings: Settings) -> None:
        super().__init__(app, shutdown_timeout=settings.shutdown_timeout_s)
        self.table = ConnectionTable(connection_limit(settings.max_connections))
        self._settings = settings

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts and freezes the app; only its handler is kept
        settings = self._settings
        return GatewayServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            table=self.table,
            header_timeout_s=settings.header_timeout_s,
            handler_kwargs={
                "access_log": None,
                "keepalive_timeout": settings.idle_timeout_s,
                "lingering_time": settings.body_timeout_s,
                "auto_decompress": False,  # a Content-Encoding is refused (415), never inflated
            },
        )


def connection_limit(wanted: int) -> int:
    """`wanted`, lowered to what the process's file limit leaves after FD_RESERVE (logged when lowered):
    past the file limit the listener could not accept at all, and the limit would not choose who goes."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or wanted <= soft - FD_RESERVE:
        return wanted
    limit = max(MIN_CONNECTIONS, soft - FD_RESERVE)
    log.warning("the file limit (%d) allows %d ingress connections, not PUSHGW_MAX_CONNECTIONS", soft, limit)
    return limit


def raise_file_limit() -> None:
    """Raise this process's open-file limit to its hard limit (the common soft 1024 is few connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20  # Linux's usual fs.nr_open
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, type(exc).__name__)
