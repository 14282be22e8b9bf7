"""GET|POST /wechat/callback: WeChat's server-URL verification and its delivery-finished events.

Verification (WECHAT_API.md s.4-5, the checks in gateway/wechat_crypto.py):
- plaintext: `signature = sha1(sorted([token, timestamp, nonce]))` in the query. It covers no body, so it is
  accepted only while `PUSHGW_WECHAT_ENCODING_AES_KEY` is unset, and only with a fresh timestamp.
- safe mode (`PUSHGW_WECHAT_ENCODING_AES_KEY` set): POSTs must carry `encrypt_type=aes` and `msg_signature`
  over token, timestamp, nonce and the body's `Encrypt`; the envelope must open with the key and be sealed
  for `PUSHGW_WECHAT_APPID`. Plaintext POSTs are refused. The GET URL check is plaintext in both modes.
- both: a `timestamp` more than TIMESTAMP_WINDOW_S from our clock, either way, is refused (a replay).
XML is parsed with DTDs and entities forbidden, whatever the encoding (defusedxml), from a size-limited body.
Every refusal is counted in `pushgw_wechat_callbacks_refused_total{reason}`.

A TEMPLATESENDJOBFINISH event names the send's `MsgID`; the worker indexed that msgid at delivery
(`keys.msgid`) and kept on the event records the msgid with a hash of the openid it was sent to, so the final
status lands on the records (`finish_status`, `finished_ms`) only when the event's FromUserName is that
recipient (checked in finish_event.lua, atomically with the write). A receipt for one of our msgids naming
another user changes nothing and is answered `success` (WeChat would retry anything else), counted as
`recipient_mismatch`. `failed:user block` then marks the customer's binding `blocked` if it still holds that
openid (mark_binding.lua).

Dedup: WeChat says to dedup on FromUserName + CreateTime, but two messages to one user in the same second
finish in the same second too; MsgID is added so the second one is not taken for a double of the first.
The dedup mark is set only after the record is written (a failure answers 503 and WeChat retries), so a
double that arrives while the first is being handled may be counted twice; writing the status is idempotent.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import defusedxml.ElementTree as SafeET
import orjson
from aiohttp import web

from gateway.context import gateway_of
from gateway.core import clock, keys, metrics
from gateway.core.errors import ApiError, BadRequest, NotFound, PayloadTooLarge, Unauthorized
from gateway.core.recipient import recipient_hash
from gateway.core.settings import Settings, aes_key_of
from gateway.wechat_crypto import (
    EnvelopeError,
    msg_signature,
    open_envelope,
    signature_matches,
    wechat_signature,
)

__all__ = ["parse_event", "receive_event", "verify_url", "wechat_signature"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024
TIMESTAMP_WINDOW_S = 300
SEEN_TTL_S = 86400
FINISH_EVENT = "TEMPLATESENDJOBFINISH"
FINISH_STATUSES = frozenset({"success", "failed:user block", "failed: system failed"})
USER_BLOCK = "failed:user block"
BINDING_BLOCKED = "blocked"
NOT_VERIFIED = "the WeChat callback failed verification"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_MSGID = re.compile(r"[0-9]{1,32}")


def _success() -> web.Response:
    return web.Response(text="success", content_type="text/plain")


def _refused(reason: str, error: ApiError) -> ApiError:
    """Count a refusal by its (bounded) reason and give back the error to raise."""
    metrics.WECHAT_CALLBACKS_REFUSED.labels(reason).inc()
    return error


def _token(settings: Settings) -> str:
    """The callback token; NotFound when none is configured (the endpoint is off)."""
    if not settings.wechat_callback_token:
        raise NotFound("the WeChat callback is not configured (PUSHGW_WECHAT_CALLBACK_TOKEN)")
    return settings.wechat_callback_token


def _check_fresh(timestamp: str) -> None:
    """Unauthorized unless `timestamp` is unix seconds within TIMESTAMP_WINDOW_S of our clock."""
    if not _TIMESTAMP.fullmatch(timestamp) or abs(int(timestamp) - clock.now_s()) > TIMESTAMP_WINDOW_S:
        raise _refused("stale", Unauthorized(NOT_VERIFIED))


def _verify_plain(query: Mapping[str, str], token: str) -> None:
    """The plaintext signature, then the timestamp's age; raises Unauthorized."""
    timestamp = query.get("timestamp", "")
    expected = wechat_signature(token, timestamp, query.get("nonce", ""))
    if not signature_matches(query.get("signature", ""), expected):
        raise _refused("signature", Unauthorized(NOT_VERIFIED))
    _check_fresh(timestamp)


async def verify_url(request: web.Request) -> web.Response:
    """WeChat's URL check (plaintext in both modes): echo `echostr` when the signature is right and fresh."""
    _verify_plain(request.query, _token(gateway_of(request).settings))
    return web.Response(text=request.query.get("echostr", ""), content_type="text/plain")


def parse_event(body: bytes) -> dict[str, str]:
    """The child elements of a WeChat `<xml>` push as text. Raises BadRequest for anything else.

    A DTD (and so any entity declaration) or an external reference is refused by the parser itself, in
    whatever encoding the document declares: no expansion, no external resources.
    """
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, ValueError, LookupError):  # defusedxml refuses with ValueErrors; codecs: both
        raise BadRequest("body is not well-formed XML without a DTD", code="invalid_xml") from None
    if root.tag != "xml":
        raise BadRequest("the root element must be <xml>", code="invalid_xml")
    return {str(child.tag): (child.text or "").strip() for child in root}


def _parse(body: bytes) -> dict[str, str]:
    try:
        return parse_event(body)
    except BadRequest as exc:
        raise _refused("xml", exc) from None


async def _read(request: web.Request) -> bytes:
    too_large = PayloadTooLarge(f"request body is larger than {MAX_BODY_BYTES} bytes")
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _refused("too_large", too_large)
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise _refused("too_large", too_large)
    return body


@functools.lru_cache(maxsize=4)
def _aes_key(encoding_aes_key: str) -> bytes:
    return aes_key_of(encoding_aes_key)


async def _open_safe_mode(request: web.Request, settings: Settings, token: str) -> dict[str, str]:
    """The event sealed in a safe-mode POST, after its msg_signature, timestamp and envelope checked out."""
    query = request.query
    if query.get("encrypt_type") != "aes" or "msg_signature" not in query:
        raise _refused("plaintext", Unauthorized("safe mode is on: only encrypted callbacks are taken"))
    encrypt = _parse(await _read(request)).get("Encrypt", "")
    if not encrypt:
        raise _refused("xml", BadRequest("a safe-mode body needs an Encrypt element", code="invalid_xml"))
    timestamp = query.get("timestamp", "")
    expected = msg_signature(token, timestamp, query.get("nonce", ""), encrypt)
    if not signature_matches(query["msg_signature"], expected):
        raise _refused("signature", Unauthorized(NOT_VERIFIED))
    _check_fresh(timestamp)
    try:
        message = open_envelope(_aes_key(settings.wechat_encoding_aes_key), encrypt, settings.wechat_appid)
    except EnvelopeError as exc:
        raise _refused(exc.reason, Unauthorized(NOT_VERIFIED)) from None
    return _parse(message)


async def receive_event(request: web.Request) -> web.Response:
    """Answer `success` to every verified, well-formed push; record a finish event's status once."""
    settings = gateway_of(request).settings
    token = _token(settings)
    if settings.wechat_encoding_aes_key:
        event = await _open_safe_mode(request, settings, token)
    else:
        _verify_plain(request.query, token)
        event = _parse(await _read(request))
    return await _record(request, event)


def _seen_key(event: dict[str, str]) -> str:
    identity = "\n".join((event.get("FromUserName", ""), event.get("CreateTime", ""), event.get("MsgID", "")))
    return keys.wechat_callback_seen(hashlib.sha256(identity.encode()).hexdigest()[:32])


async def _record(request: web.Request, event: dict[str, str]) -> web.Response:
    status, msgid = event.get("Status", ""), event.get("MsgID", "")
    if event.get("Event") != FINISH_EVENT or status not in FINISH_STATUSES or not _MSGID.fullmatch(msgid):
        metrics.WECHAT_FINISH_EVENTS.labels("other").inc()
        return _success()
    gw = gateway_of(request)
    seen = _seen_key(event)
    async with gw.redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.msgid(msgid))
        pipe.exists(seen)
        raw_index, already = await pipe.execute()
    if already:
        metrics.WECHAT_FINISH_EVENTS.labels("duplicate").inc()
        return _success()
    if raw_index is None:  # not sent by us, or older than the event TTL
        metrics.WECHAT_FINISH_EVENTS.labels("unknown_msgid").inc()
        return _success()
    index: dict[str, Any] = orjson.loads(raw_index)
    customer_id, openid = str(index["cid"]), event.get("FromUserName", "")
    shard = keys.shard_of(customer_id, gw.settings.shards)
    matched, _ = await gw.scripts.finish_event(
        gw.redis,
        shard,
        list(index["records"]),
        status,
        clock.now_ms(),
        msgid=msgid,
        to_hash=recipient_hash(msgid, openid),
    )
    if not matched:  # a receipt for our msgid naming another user (or records already expired)
        metrics.WECHAT_FINISH_EVENTS.labels("recipient_mismatch").inc()
        log.warning("wechat finish event ignored: not the recipient of the msgid", extra={"msgid": msgid})
        return _success()
    if status == USER_BLOCK:  # only if still bound to that openid: the customer may have been re-bound since
        await gw.scripts.mark_binding(gw.redis, customer_id, openid, BINDING_BLOCKED)
    if not await gw.redis.set(seen, "1", nx=True, ex=SEEN_TTL_S):
        metrics.WECHAT_FINISH_EVENTS.labels("duplicate").inc()
        return _success()
    metrics.WECHAT_FINISH_EVENTS.labels(status).inc()
    if "acc" in index:
        metrics.FINISH_LATENCY.observe(max(0, clock.now_ms() - int(index["acc"])) / 1000)
    log.info("wechat finish event %s", status, extra={"msgid": msgid})
    return _success()
