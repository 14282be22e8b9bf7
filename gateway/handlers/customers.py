"""PUT|GET /v1/customers/{customer_id}/preferences and GET /v1/customers/{customer_id}/events (the timeline
a call-centre agent reads to answer "why did I not get the alert?")."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, cast

import orjson
from aiohttp import web

from gateway import archived
from gateway.context import gateway_of
from gateway.core import clock, keys
from gateway.core.errors import Unprocessable
from gateway.core.preferences import EMPTY, compile_preferences, parse_preferences
from gateway.core.redis import text_map
from gateway.handlers.events import iso, lifecycle
from gateway.requests import decode_json, path_id, read_body
from gateway.responses import respond

DEFAULT_LIMIT, MOST_LIMIT = 50, 200
CURSOR_SLACK = 256  # events of one customer accepted in the cursor's millisecond, read beyond a page
_STEP_TIMES = ("accepted_ms", "updated_ms", "finished_ms")


def _compiled(data: Any, now_s: int) -> tuple[dict[str, Any], dict[str, str]]:
    """The validated document and its compiled hash; raises Unprocessable."""
    doc = parse_preferences(data)
    return doc, compile_preferences(doc, now_s)


async def put_preferences(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    body = await read_body(request, gw.settings.max_body_bytes)
    caller = gw.verify(request, body)
    customer_id = path_id(request, "customer_id")
    # in a thread: a time zone's first use reads it from disk, and its offsets for years take a while
    doc, fields = await asyncio.to_thread(_compiled, decode_json(body), int(clock.now_s()))
    shard = keys.shard_of(customer_id, gw.settings.shards)
    async with gw.remembered(caller, replay_harmless=False):
        await gw.scripts.save_preferences(gw.redis, shard, customer_id, fields, clock.now_ms())
    return respond({"customer_id": customer_id, **doc})


async def get_preferences(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    key = keys.preferences(keys.shard_of(customer_id, gw.settings.shards), customer_id)
    stored = await gw.redis.hget(key, "doc")
    return respond({"customer_id": customer_id, **(orjson.loads(stored) if stored else EMPTY)})


def _query(request: web.Request) -> tuple[int, int]:
    """(since unix ms, limit) from the query string; raises Unprocessable naming the parameter."""
    since_ms = 0
    if since := request.query.get("since"):
        try:
            moment = datetime.fromisoformat(since)
        except ValueError:
            raise Unprocessable("since must be an ISO-8601 date-time", field="since") from None
        if moment.tzinfo is None:
            raise Unprocessable("since must carry a time zone offset", field="since")
        since_ms = int(moment.timestamp() * 1000)
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MOST_LIMIT:
        raise Unprocessable(f"limit must be an integer from 1 to {MOST_LIMIT}", field="limit")
    return since_ms, int(raw)


def timeline_steps(record: dict[str, str]) -> list[dict[str, Any]]:
    """The record's states with their times, oldest first."""
    steps: list[tuple[str, str, str | None]] = [("accepted", record.get("accepted_ms", ""), None)]
    status = record.get("status", "")
    if "held" in record:
        steps.append(("digested", record.get("accepted_ms", ""), record["held"]))
    if status == "suppressed":
        steps.append(("suppressed", record.get("accepted_ms", ""), record.get("last_error")))
    if "delivered_ms" in record:
        steps.append(("sent", record["delivered_ms"], record.get("msgid")))
    elif status in {"retrying", "failed", "dead_lettered", "no_binding"}:
        steps.append((status, record.get("updated_ms", ""), record.get("last_error")))
    if "finished_ms" in record:
        steps.append(("wechat_finished", record["finished_ms"], record.get("finish_status")))
    if "notice" in record:
        steps.append(
            (f"fallback_{record['notice']}", record.get("notified_ms", ""), record.get("notice_error"))
        )
    ordered = sorted(steps, key=lambda step: int(step[1] or 0))
    return [
        {"state": state, "at": iso(at), **({"detail": detail} if detail else {})}
        for state, at, detail in ordered
    ]


def _timeline_entry(member: str, record: dict[str, str]) -> dict[str, Any]:
    source, _, event_id = member.partition(":")
    view = lifecycle(event_id, record)
    view["source"] = source
    for name in ("type", "amount", "currency", "priority", "occurred_at"):
        if name in record:
            view[name] = record[name]
    if "account_tail" in record:
        view["account"] = f"****{record['account_tail']}"
    view["timeline"] = timeline_steps(record)
    return view


async def get_customer_events(request: web.Request) -> web.Response:
    """Newest first: the live timeline (Redis, the last PUSHGW_EVENT_TTL_S) and, with an archive, the
    archived events (gateway/archived.py), each marked by its `origin`; `cursor` pages back from the last."""
    gw = gateway_of(request)
    gw.verify(request, b"")
    customer_id = path_id(request, "customer_id")
    since_ms, limit = _query(request)
    cursor = archived.cursor_of(request)
    shard = keys.shard_of(customer_id, gw.settings.shards)
    # past a cursor the events of its own millisecond up to it are skipped: read a few more
    scored = await gw.redis.zrevrangebyscore(
        keys.customer_events(shard, customer_id),
        cursor[0] if cursor else "+inf",
        since_ms,
        start=0,
        num=limit + (CURSOR_SLACK if cursor else 0),
        withscores=True,
    )
    members = [
        (int(ms), str(m))
        for m, ms in cast(list[tuple[str, float]], scored)
        if archived.after(cursor, int(ms), str(m))
    ][:limit]
    async with gw.redis.pipeline(transaction=False) as pipe:
        for _, member in members:
            source, _, event_id = member.partition(":")
            pipe.hgetall(keys.event(shard, source, event_id))
        records = [text_map(record) for record in await pipe.execute()] if members else []
    live = [(ms, m, _timeline_entry(m, r)) for (ms, m), r in zip(members, records, strict=True) if r]
    events, next_cursor = await archived.timeline_page(
        request, customer_id, since_ms, limit, cursor, live, _timeline_entry
    )
    return respond({"customer_id": customer_id, "events": events, "next_cursor": next_cursor})
