"""Reading a request the way every handler does: its JSON body (bounded in size and time, strictly decoded)
and its path ids."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from aiohttp import StreamReader, hdrs, web
from aiohttp.web_protocol import RequestPayloadError

from gateway import strict_json
from gateway.context import GATEWAY
from gateway.core.errors import (
    BadRequest,
    ClientClosedRequest,
    PayloadTooLarge,
    RequestTimeout,
    Unprocessable,
    UnsupportedMediaType,
)

_PATH_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


async def read_body(request: web.Request, limit_bytes: int) -> bytes:
    """The raw JSON body, kept raw for the signature, complete within PUSHGW_BODY_TIMEOUT_S.

    Raises UnsupportedMediaType (415: not application/json, or any Content-Encoding but identity: bodies
    are never compressed), PayloadTooLarge (413), RequestTimeout (408: the body was late; the connection is
    then closed), BadRequest (400: its framing broke, e.g. a bad chunk) or ClientClosedRequest (499: the
    client went away). None of them repeats request bytes."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json")
    if request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower() != "identity":
        raise UnsupportedMediaType("Content-Encoding must be identity", code="unsupported_encoding")
    if request.content_length is not None and request.content_length > limit_bytes:
        raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
    try:
        if request.content.is_eof():  # it came with the headers (the common case): nothing to wait for
            return await _body_up_to(request.content, limit_bytes)
        async with asyncio.timeout(request.app[GATEWAY].settings.body_timeout_s):
            return await _body_up_to(request.content, limit_bytes)
    except (TimeoutError, ConnectionError, RequestPayloadError) as exc:
        if request.transport is None or request.transport.is_closing():
            raise ClientClosedRequest("the client closed the connection mid-body") from None
        if isinstance(exc, TimeoutError):
            raise RequestTimeout("the request body did not arrive in time") from None
        raise BadRequest("the request body's framing is broken", code="malformed_body") from None


async def _body_up_to(content: StreamReader, limit_bytes: int) -> bytes:
    chunks, size = [], 0
    while chunk := await content.readany():
        size += len(chunk)
        if size > limit_bytes:
            raise PayloadTooLarge(f"request body is larger than {limit_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def decode_json(body: bytes) -> object:
    """Raises BadRequest (invalid_json) for anything that is not one JSON document in UTF-8, or that has an
    object repeating a key, at any depth (see gateway/strict_json.py)."""
    try:
        return strict_json.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("body is not valid JSON", code="invalid_json") from None
    except strict_json.DuplicateKey:
        raise BadRequest("body is not valid JSON: an object repeats a key", code="invalid_json") from None


def path_id(request: web.Request, name: str) -> str:
    """A path parameter holding an id; raises Unprocessable naming it."""
    value = request.match_info[name]
    if not _PATH_ID.fullmatch(value):
        raise Unprocessable(f"{name} must be 1 to 64 letters, digits or . _ : -", field=name)
    return value


def batch_items(data: object, name: str, most: int) -> list[Any]:
    """The items of a batch body `{name: [...]}`: 1 to `most` of them, each checked by its handler. Raises
    Unprocessable (another field, named as an unknown field of an item is; not a non-empty list) or
    PayloadTooLarge (more than `most`)."""
    if not isinstance(data, dict) or set(data) != {name}:
        extra = sorted(set(data) - {name}) if isinstance(data, dict) else []
        if extra:
            raise Unprocessable(f"unknown field {extra[0][:64]!r}", code="unknown_field", field=extra[0][:64])
        raise Unprocessable(f'body must be {{"{name}": [...]}}', field=name)
    items = data[name]
    if not isinstance(items, list) or not items:
        raise Unprocessable(f"{name} must be a non-empty list", field=name)
    if len(items) > most:
        raise PayloadTooLarge(f"a batch holds at most {most} {name}")
    return items
