"""DELETE /v1/customers/{customer_id}: erase what pushgw holds about a customer (拔卡; right to deletion)."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.archived import archive_of
from gateway.context import gateway_of
from gateway.core import metrics
from gateway.erasure import Eraser, customer_ref
from gateway.requests import path_id
from gateway.responses import respond

log = logging.getLogger(__name__)


async def delete_customer(request: web.Request) -> web.Response:
    """200 with the counts of what was erased; idempotent (a repeat answers zeros). The nonce stays spent
    when Redis times out: a replayed erasure could undo a binding made since, so a retry signs anew."""
    gw = gateway_of(request)
    caller = gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    async with gw.remembered(caller, replay_harmless=False):
        eraser = Eraser(gw.redis, gw.scripts, gw.settings.shards, archive=archive_of(request))
        erased = await eraser.erase(customer_id)
    result = "erased" if erased.anything else "nothing_held"
    metrics.child(metrics.ERASURES, result).inc()
    # the audit line: who asked, and counts; the customer only as a hash of their id
    log.info(
        "customer erasure %s",
        result,
        extra={"source": caller.source, "customer_ref": customer_ref(customer_id), **erased.counts()},
    )
    return respond({"customer_id": customer_id, "erased": erased.counts()})
