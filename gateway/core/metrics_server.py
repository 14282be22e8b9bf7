"""A tiny app serving /metrics and /healthz, for processes whose main job is not HTTP (worker, simulator)."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def metrics_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", _healthz)
    return app
