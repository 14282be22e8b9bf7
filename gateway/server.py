"""What `pushgw gateway` runs: the ingress listener (HTTP, or HTTPS with optional client certificates) and
an optional /metrics listener of its own, both through gateway/transport.py, until it is drained.

A drain (SIGTERM, SIGINT, SIGUSR1, or POST /admin/drain on the metrics listener, never on the ingress port)
first makes /readyz answer 503 "draining" while every request is still served for PUSHGW_DRAIN_GRACE_S, so a
load balancer takes the gateway out before it closes; then the listeners close and open requests finish
within PUSHGW_SHUTDOWN_TIMEOUT_S. A second signal during the grace ends the grace at once."""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from aiohttp import web

from gateway.app import LISTEN_BACKLOG, create_app
from gateway.context import GATEWAY
from gateway.core.metrics_server import metrics_app
from gateway.core.settings import ConfigError, Settings
from gateway.transport import GatewayRunner, raise_file_limit

log = logging.getLogger(__name__)
DRAIN_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context (TLS 1.2 or later), requiring a client certificate signed by
    PUSHGW_TLS_CLIENT_CA_FILE when that is set; None without PUSHGW_TLS_CERT_FILE. Raises ConfigError
    naming the variable when a file cannot be loaded."""
    if not settings.tls_cert_file:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"PUSHGW_TLS_CERT_FILE / PUSHGW_TLS_KEY_FILE: cannot load the certificate and key ({exc})"
        ) from None
    if settings.tls_client_ca_file:
        try:
            context.load_verify_locations(cafile=settings.tls_client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"PUSHGW_TLS_CLIENT_CA_FILE: cannot load it ({exc})") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class Listener(web.BaseSite):
    """A TCP listener like web.TCPSite, with a deadline on the TLS handshake: a connection is only the
    transport's to bound once its handshake is done, so a client that never finishes one is cut here."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 10.0,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=LISTEN_BACKLOG)
        self.host = host
        self.port = port
        self._handshake_timeout_s = handshake_timeout_s
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        if server is None:
            raise RuntimeError("set the runner up before starting its listeners")
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self.host,
            self.port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._handshake_timeout_s if self._ssl_context else None,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
        self.port = self._server.sockets[0].getsockname()[1]


class Drain:
    """A gateway's drain: `start` marks it draining (/readyz: 503) and sets `requested`; a second `start`
    (another signal) sets `now`: the grace ends at once."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.now = asyncio.Event()
        self._app: web.Application | None = None

    def serve(self, app: web.Application) -> None:
        """The started gateway app this drain marks (also when the drain was asked for before)."""
        self._app = app
        app[GATEWAY].draining = self.requested.is_set()

    def start(self, why: str) -> None:
        if self.requested.is_set():
            log.warning("gateway drain: %s again, stopping now", why)
            self.now.set()
            return
        if self._app is not None:
            self._app[GATEWAY].draining = True
        log.warning("gateway draining (%s): /readyz answers 503, requests are served until it stops", why)
        self.requested.set()

    async def handler(self, request: web.Request) -> web.Response:
        """POST /admin/drain (metrics listener only)."""
        self.start("POST /admin/drain")
        return web.json_response({"status": "draining"}, status=202)

    async def grace(self, grace_s: float) -> None:
        """Wait for a drain, then serve on for `grace_s` (or until a second signal)."""
        await self.requested.wait()
        try:
            async with asyncio.timeout(grace_s):
                await self.now.wait()
        except TimeoutError:
            pass
        log.warning("gateway stopping: listeners close, open requests finish")


@dataclass(frozen=True)
class Listening:
    """Where a gateway answers: `url` the ingress, `metrics_url` its own /metrics listener (or None);
    `drain` drains it (POST /admin/drain on the metrics listener calls it too)."""

    url: str
    metrics_url: str | None
    runner: GatewayRunner
    drain: Drain


@asynccontextmanager
async def gateway_listening(
    settings: Settings, host: str, port: int, *, reuse_port: bool = False, drain: Drain | None = None
) -> AsyncIterator[Listening]:
    """The gateway app served on host:port (port 0: a free one), and on PUSHGW_GATEWAY_METRICS_PORT its
    /metrics and POST /admin/drain (which starts `drain`); stopped gracefully on exit (within
    PUSHGW_SHUTDOWN_TIMEOUT_S). Raises ConfigError before anything starts when the settings or TLS files are
    unusable."""
    context = tls_context(settings)
    app = create_app(settings)
    runner = GatewayRunner(app, settings)
    metrics_runner: GatewayRunner | None = None
    drain = drain or Drain()
    await runner.setup()
    drain.serve(app)
    try:
        ingress = Listener(
            runner,
            host,
            port,
            ssl_context=context,
            handshake_timeout_s=settings.header_timeout_s,
            reuse_port=reuse_port,
        )
        await ingress.start()
        metrics_url = None
        if settings.gateway_metrics_port:
            admin = metrics_app()
            admin.router.add_post("/admin/drain", drain.handler)
            metrics_runner = GatewayRunner(admin, settings)
            await metrics_runner.setup()
            metrics_site = Listener(
                metrics_runner, settings.metrics_host, settings.gateway_metrics_port, reuse_port=reuse_port
            )
            await metrics_site.start()
            metrics_url = metrics_site.name
        yield Listening(ingress.name, metrics_url, runner, drain)
    finally:
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await runner.cleanup()


async def serve_gateway(settings: Settings, host: str, port: int, *, reuse_port: bool = False) -> None:
    """One gateway process, until drained (SIGTERM, SIGINT, SIGUSR1, POST /admin/drain): /readyz answers
    503 at once, requests are served for PUSHGW_DRAIN_GRACE_S more, then it stops accepting, finishes what
    it has within PUSHGW_SHUTDOWN_TIMEOUT_S and returns. `reuse_port` when several processes share the
    port."""
    raise_file_limit()
    loop = asyncio.get_running_loop()
    drain = Drain()
    for signum in DRAIN_SIGNALS:
        loop.add_signal_handler(signum, drain.start, signal.Signals(signum).name)
    async with gateway_listening(settings, host, port, reuse_port=reuse_port, drain=drain):
        await drain.grace(settings.drain_grace_s)
