"""PUT|GET|DELETE /v1/bindings/{customer_id}: the customer's WeChat openid."""

from __future__ import annotations

import re
from typing import Any, cast

from aiohttp import web

from gateway.context import decode_json, gateway_of, path_id, read_body
from gateway.core import clock, keys
from gateway.core.errors import NotFound, Unprocessable
from gateway.core.redis import text_map
from gateway.responses import respond

_OPENID = re.compile(r"[A-Za-z0-9_-]{6,64}")
_APPID = re.compile(r"wx[A-Za-z0-9_]{1,62}")
BINDING_ACTIVE = "active"


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
    async with gw.remembered(caller, replay_harmless=False), gw.redis.pipeline(transaction=True) as pipe:
        pipe.delete(keys.binding(customer_id))
        pipe.hset(keys.binding(customer_id), mapping=cast(Any, record))
        await pipe.execute()
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
    gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    if not await gw.redis.delete(keys.binding(customer_id)):
        raise NotFound("no binding for this customer", field="customer_id")
    return web.Response(status=204)
