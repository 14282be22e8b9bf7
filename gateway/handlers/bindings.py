"""PUT|GET|DELETE /v1/bindings/{customer_id}: the customer's WeChat openid; POST /v1/bindings/batch: many at
once (core banking re-sending every binding after `pushgw epoch reset`, or `pushgw bindings import`)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import web

from gateway.context import gateway_of
from gateway.core import clock, keys
from gateway.core.errors import ApiError, NotFound, Unprocessable
from gateway.core.redis import RedisClient, text_map
from gateway.core.scripts import Scripts
from gateway.requests import batch_items, decode_json, path_id, read_body
from gateway.responses import respond

_OPENID = re.compile(r"[A-Za-z0-9_-]{6,64}")
_CUSTOMER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # as a path id (gateway/context.py)
_APPID = re.compile(r"wx[A-Za-z0-9_]{1,62}")
BINDING_ACTIVE = "active"
MOST_BINDINGS = 500  # in one POST /v1/bindings/batch
_WRITES_AT_ONCE = 32  # one small transaction per binding (each in its customer's slot), this many in flight


def _parse_binding(data: object, accounts: frozenset[str]) -> dict[str, str]:
    """The binding to store; an appid must name a configured account when the gateway knows them
    (PUSHGW_WECHAT_APPID set): a message is never sent through an account the customer did not follow."""
    if not isinstance(data, dict):
        raise Unprocessable("body must be a JSON object", field="")
    for name in data:
        if name not in {"openid", "appid"}:
            raise Unprocessable(f"unknown field {name[:64]!r}", code="unknown_field", field=name[:64])
    openid = data.get("openid")
    if openid is None:
        raise Unprocessable("openid is required", code="missing_field", field="openid")
    if not isinstance(openid, str) or not _OPENID.fullmatch(openid):
        raise Unprocessable("openid must be 6 to 64 letters, digits, _ or -", field="openid")
    binding = {"openid": openid}
    appid = data.get("appid")
    if appid is not None:
        if not isinstance(appid, str) or not _APPID.fullmatch(appid):
            raise Unprocessable("appid must look like wx followed by letters and digits", field="appid")
        if accounts and appid not in accounts:
            raise Unprocessable(
                "appid is not an official account this deployment sends through",
                code="unknown_appid",
                field="appid",
            )
        binding["appid"] = appid
    return binding


def _view(customer_id: str, record: dict[str, str]) -> dict[str, str]:
    view = {"customer_id": customer_id, "openid": record["openid"], "status": record.get("status", "")}
    if "appid" in record:
        view["appid"] = record["appid"]
    return view


async def put_binding(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    body = await read_body(request, gw.settings.max_body_bytes)
    caller = gw.verify(request, body)
    customer_id = path_id(request, "customer_id")
    binding = _parse_binding(decode_json(body), gw.settings.wechat_appids())
    record: dict[str, str] = {**binding, "status": BINDING_ACTIVE, "updated_ms": str(clock.now_ms())}
    async with gw.remembered(caller, replay_harmless=False):
        await gw.scripts.replace_hash(gw.redis, keys.binding(customer_id), record)
    return respond(_view(customer_id, record))


async def get_binding(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    record = text_map(await gw.redis.hgetall(keys.binding(customer_id)))
    if not record:
        raise NotFound("no binding for this customer", field="customer_id")
    return respond(_view(customer_id, record))


async def delete_binding(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    caller = gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    async with gw.remembered(caller, replay_harmless=False):  # a replay could undo a later re-binding
        deleted = await gw.redis.delete(keys.binding(customer_id))
    if not deleted:
        raise NotFound("no binding for this customer", field="customer_id")
    return web.Response(status=204)


def _batch_item(item: object, accounts: frozenset[str]) -> tuple[str, dict[str, str]]:
    """(customer id, binding) of one item; raises Unprocessable naming the field."""
    if not isinstance(item, dict):
        raise Unprocessable("each binding must be a JSON object", field="")
    customer_id = item.get("customer_id")
    if not isinstance(customer_id, str) or not _CUSTOMER_ID.fullmatch(customer_id):
        raise Unprocessable("customer_id must be 1 to 64 letters, digits or . _ : -", field="customer_id")
    return customer_id, _parse_binding({k: v for k, v in item.items() if k != "customer_id"}, accounts)


async def post_bindings(request: web.Request) -> web.Response:
    """Bind many customers: 200 {"results": [{"customer_id", "status": "bound" | "rejected", "error"?}]} in
    request order; an item repeating an earlier customer wins over it (as PUTs in that order would). The
    signature's nonce is remembered as for a PUT (a replay could undo a later change); only a Redis that
    ingest would write to is written to (503 otherwise: the data epoch, durability)."""
    gw = gateway_of(request)
    body = await read_body(request, gw.settings.max_batch_body_bytes)
    caller = gw.verify(request, body)
    items = batch_items(decode_json(body), "bindings", MOST_BINDINGS)
    accounts = gw.settings.wechat_appids()
    results: list[dict[str, Any]] = []
    writes: dict[str, dict[str, str]] = {}  # customer id -> binding, the last item of a customer winning
    for item in items:
        try:
            customer_id, binding = _batch_item(item, accounts)
        except ApiError as exc:
            named = item.get("customer_id") if isinstance(item, dict) else None
            shown = named if isinstance(named, str) and _CUSTOMER_ID.fullmatch(named) else None
            results.append({"customer_id": shown, "status": "rejected", "error": _error_detail(exc)})
            continue
        writes[customer_id] = {**binding, "status": BINDING_ACTIVE, "updated_ms": str(clock.now_ms())}
        results.append({"customer_id": customer_id, "status": "bound"})
    if writes:
        gw.readiness.require_accepting()
        async with gw.remembered(caller, replay_harmless=False):
            await _write_bindings(gw.redis, gw.scripts, writes)
    return respond({"results": results})


def _error_detail(error: ApiError) -> dict[str, Any]:
    detail: dict[str, Any] = error.body()["error"]
    return detail


async def _write_bindings(redis: RedisClient, scripts: Scripts, writes: dict[str, dict[str, str]]) -> None:
    """Each binding replaced atomically (one script on its customer's slot)."""
    slots = asyncio.Semaphore(_WRITES_AT_ONCE)

    async def write(customer_id: str, record: dict[str, str]) -> None:
        async with slots:
            await scripts.replace_hash(redis, keys.binding(customer_id), record)

    await asyncio.gather(*(write(customer_id, record) for customer_id, record in writes.items()))
