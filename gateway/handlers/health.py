"""GET /healthz (the process is up) and GET /readyz (Redis reachable, durable, its data epoch intact, and
this process not shedding load)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from gateway.context import gateway_of
from gateway.core.redis import DataLost, NotDurable
from gateway.responses import respond


async def healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    try:
        async with asyncio.timeout(gw.settings.redis_timeout_s):
            await gw.redis.ping()
    except (DataLost, NotDurable) as exc:
        return respond({"status": "unavailable", "problems": [str(exc)]}, status=503)
    except Exception as exc:  # any failure to reach Redis means not ready
        return respond({"status": "unavailable", "problems": [f"redis: {type(exc).__name__}"]}, status=503)
    readiness = gw.readiness
    if readiness.data_lost or (readiness.require_durable and not readiness.durable):
        return respond({"status": "unavailable", "problems": readiness.problems}, status=503)
    if gw.admission.shedding:
        return respond({"status": "shedding", "problems": ["too many ingest requests at once"]}, status=503)
    return respond({"status": "ready"})
