"""GET /healthz (the process is up) and GET /readyz: ready exactly when ingest would accept (the one
predicate of gateway/context.py: Redis reachable, durable, its data epoch intact; this process not full),
and not draining."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.context import Gateway, gateway_of
from gateway.core.redis import DataLost, NotDurable, refusal
from gateway.responses import respond


async def healthz(request: web.Request) -> web.Response:
    return respond({"status": "ok"})


def _unavailable(problems: list[str], *, data_lost: bool) -> web.Response:
    body: dict[str, Any] = {"status": "unavailable", "problems": problems}
    if data_lost:  # what operator commands check before they read through this gateway
        body["data_lost"] = True
    return respond(body, status=503)


async def _ping(gw: Gateway) -> web.Response | None:
    """A live round trip, so an outage since the last check shows now (ingest would fail on it too)."""
    try:
        async with asyncio.timeout(gw.settings.redis_timeout_s):
            await gw.redis.ping()
    except DataLost as exc:  # a new connection found no data epoch, or another one
        return _unavailable([str(exc)], data_lost=True)
    except NotDurable as exc:  # a new connection found no AOF, or an evicting policy
        return _unavailable([str(exc)], data_lost=False)
    except Exception as exc:  # any failure to reach Redis means not ready
        problem = refusal(exc) or f"redis unreachable ({type(exc).__name__})"
        return _unavailable([problem], data_lost=False)
    return None


async def readyz(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    readiness = gw.readiness
    if readiness.refusal() is not None:  # what ingest answers now: the last check's and a new connection's
        return _unavailable(readiness.current_problems(), data_lost=readiness.lost_data())
    if gw.admission.shedding:
        return respond({"status": "shedding", "problems": ["too many ingest requests at once"]}, status=503)
    if (unreachable := await _ping(gw)) is not None:
        return unreachable
    if gw.draining:
        return respond(
            {"status": "draining", "problems": ["the gateway is draining: it stops soon"]}, status=503
        )
    return respond({"status": "ready"})
