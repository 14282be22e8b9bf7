"""GET|POST /wechat/callback: WeChat's server-URL verification and its delivery-finished events.

WeChat signs each request with `signature = sha1("".join(sorted([token, timestamp, nonce])))` in the query
(WECHAT_API.md s.4). A TEMPLATESENDJOBFINISH event names the send's `MsgID`; the worker indexed that msgid
at delivery (`keys.msgid`), so the final status lands on the event's record (`finish_status`, `finished_ms`)
and `failed:user block` marks the customer's binding `blocked` when it still holds that openid.

Dedup: WeChat says to dedup on FromUserName + CreateTime, but two messages to one user in the same second
finish in the same second too; MsgID is added so the second one is not taken for a double of the first.
The dedup mark is set only after the record is written (a failure answers 503 and WeChat retries), so a
double that arrives while the first is being handled may be counted twice; writing the status is idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import xml.etree.ElementTree as ET
from typing import Any

import orjson
from aiohttp import web

from gateway.context import gateway_of
from gateway.core import clock, keys, metrics
from gateway.core.errors import BadRequest, NotFound, PayloadTooLarge, Unauthorized

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
SEEN_TTL_S = 86400
FINISH_EVENT = "TEMPLATESENDJOBFINISH"
FINISH_STATUSES = frozenset({"success", "failed:user block", "failed: system failed"})
USER_BLOCK = "failed:user block"
BINDING_BLOCKED = "blocked"


def _success() -> web.Response:
    return web.Response(text="success", content_type="text/plain")


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's server-URL signature: hex sha1 of the three strings sorted and joined."""
    joined = "".join(sorted([token, timestamp, nonce]))
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324 - WeChat's scheme is SHA1


def _verify(request: web.Request) -> None:
    """Raises NotFound when no callback token is configured, Unauthorized for a bad signature."""
    token = gateway_of(request).settings.wechat_callback_token
    if not token:
        raise NotFound("the WeChat callback is not configured (PUSHGW_WECHAT_CALLBACK_TOKEN)")
    query = request.query
    given = query.get("signature", "")
    expected = wechat_signature(token, query.get("timestamp", ""), query.get("nonce", ""))
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("bad WeChat signature")


async def verify_url(request: web.Request) -> web.Response:
    """WeChat's URL check: echo `echostr` when the signature is right."""
    _verify(request)
    return web.Response(text=request.query.get("echostr", ""), content_type="text/plain")


def parse_event(body: bytes) -> dict[str, str]:
    """The child elements of a WeChat `<xml>` push as text. Raises BadRequest for anything else.

    A DOCTYPE (and so any entity declaration) is refused before parsing: no entity expansion, no external
    resources; with the body size limit that leaves nothing for a hostile document to expand.
    """
    lowered = body.lower()
    if b"<!doctype" in lowered or b"<!entity" in lowered:
        raise BadRequest("XML with a DOCTYPE or an entity is refused", code="invalid_xml")
    try:
        root = ET.fromstring(body)  # noqa: S314 - see above
    except ET.ParseError:
        raise BadRequest("body is not well-formed XML", code="invalid_xml") from None
    if root.tag != "xml":
        raise BadRequest("the root element must be <xml>", code="invalid_xml")
    return {child.tag: (child.text or "").strip() for child in root}


async def _read(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _seen_key(event: dict[str, str]) -> str:
    identity = "\n".join((event.get("FromUserName", ""), event.get("CreateTime", ""), event.get("MsgID", "")))
    return keys.wechat_callback_seen(hashlib.sha256(identity.encode()).hexdigest()[:32])


async def receive_event(request: web.Request) -> web.Response:
    """Answer `success` to every well-signed, well-formed push; record a finish event's status once."""
    _verify(request)
    event = parse_event(await _read(request))
    status = event.get("Status", "")
    if event.get("Event") != FINISH_EVENT or status not in FINISH_STATUSES or not event.get("MsgID"):
        metrics.WECHAT_FINISH_EVENTS.labels("other").inc()
        return _success()
    gw = gateway_of(request)
    seen = _seen_key(event)
    async with gw.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.msgid(event["MsgID"]))
        pipe.exists(seen)
        raw_index, already = await pipe.execute()
    if already:
        metrics.WECHAT_FINISH_EVENTS.labels("duplicate").inc()
        return _success()
    if raw_index is None:  # not sent by us, or older than the event TTL
        metrics.WECHAT_FINISH_EVENTS.labels("unknown_msgid").inc()
        return _success()
    index: dict[str, Any] = orjson.loads(raw_index)
    shard = keys.shard_of(index["cid"], gw.settings.shards)
    await gw.scripts.finish_event(gw.redis, shard, list(index["records"]), status, clock.now_ms())
    if status == USER_BLOCK:
        await _mark_blocked(request, str(index["cid"]), event.get("FromUserName", ""))
    if not await gw.redis.set(seen, "1", nx=True, ex=SEEN_TTL_S):
        metrics.WECHAT_FINISH_EVENTS.labels("duplicate").inc()
        return _success()
    metrics.WECHAT_FINISH_EVENTS.labels(status).inc()
    if "acc" in index:
        metrics.FINISH_LATENCY.observe(max(0, clock.now_ms() - int(index["acc"])) / 1000)
    log.info("wechat finish event %s", status, extra={"msgid": event["MsgID"]})
    return _success()


async def _mark_blocked(request: web.Request, customer_id: str, openid: str) -> None:
    redis = gateway_of(request).redis
    key = keys.binding(customer_id)
    if openid and await redis.hget(key, "openid") == openid:  # the customer may have been re-bound since
        await redis.hset(key, "status", BINDING_BLOCKED)
