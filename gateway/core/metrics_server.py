"""/metrics for every pushgw process, and a tiny app serving /metrics and /healthz for processes whose main
job is not HTTP (the worker).

One process: the default registry. Several processes of one component (`--processes N`): `pushgw` gives them
a shared directory (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by gateway/cli.py
before they start) and calls `aggregate_processes`, so whichever process answers a scrape serves the sum of
all of them: counters and histograms add up and never saw-tooth. The build info and the queue snapshot each
process reads from Redis are served as they are (every worker reports the same Redis figures, so they must
not be added). The process_* collectors are left out there: one process's CPU and memory at random would
make `process_cpu_seconds_total` saw-tooth.
"""

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from gateway.core import metrics

_served: CollectorRegistry = REGISTRY


def aggregate_processes(directory: str) -> None:
    """Serve the metrics of every process writing to `directory` (this process's PROMETHEUS_MULTIPROC_DIR)."""
    global _served
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    registry.register(metrics.BUILD_INFO)
    registry.register(metrics.QUEUE)
    _served = registry


async def metrics_handler(request: web.Request) -> web.Response:
    # collecting reads files (/proc for the process collector; every process's files in multiprocess mode)
    # and renders every series: in a thread, so a scrape never stalls the event loop
    body = await asyncio.to_thread(generate_latest, _served)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def metrics_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", _healthz)
    return app
