"""POST /v1/events, POST /v1/events/batch, GET /v1/events/{event_id}."""

from __future__ import annotations

import math
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gateway import archived
from gateway.context import gateway_of
from gateway.core import keys, metrics
from gateway.core.errors import (
    ApiError,
    NotFound,
    TooManyRequests,
    Unprocessable,
)
from gateway.core.event import Event, parse_event
from gateway.core.scripts import IngestArgs
from gateway.core.status import EventStatus
from gateway.requests import batch_items, decode_json, path_id, read_body
from gateway.responses import respond

_ACCEPTED = {"queued": 202, "digested": 202, "suppressed": 202, "duplicate": 200}


def _raise_for(status: str, detail: str) -> None:
    """Turn an ingest script answer that is not an acceptance into its API error."""
    if status == "conflict":
        raise Unprocessable(
            "event_id was already used with a different body", code="event_id_conflict", field="event_id"
        )
    if status == "rate_limited":
        raise TooManyRequests("customer rate limit reached", retry_after_s=int(detail) / 1000)


def _count(result: str, events: int = 1) -> None:
    metrics.child(metrics.EVENTS, result).inc(events)


async def post_event(request: web.Request) -> web.Response:
    """A re-sent request needs no replay memory: the event-id dedup answers it (200 duplicate). An ingest
    slot (Admission) is taken only once the body was read and its signature verified."""
    gw = gateway_of(request)
    body = await read_body(request, gw.settings.max_body_bytes)
    caller = gw.verify(request, body)
    try:
        event = parse_event(decode_json(body))
    except ApiError:
        _count("invalid")
        raise
    args = IngestArgs.of(caller.source, event, critical=gw.settings.critical_rules.is_critical(event))
    with gw.admission.admitted():
        gw.readiness.require_accepting()
        status, detail = await gw.ingestor.submit(args)
    _count(status)
    _raise_for(status, detail)
    return respond({"event_id": event.event_id, "status": status}, status=_ACCEPTED[status])


def _item_error(item: Any, error: ApiError) -> dict[str, Any]:
    event_id = item.get("event_id") if isinstance(item, dict) else None
    field = error.field
    result: dict[str, Any] = {
        "event_id": event_id if isinstance(event_id, str) else None,
        "status": "rejected",
        "error": error.body()["error"],
    }
    if field is not None:
        result["error"]["field"] = field
    return result


async def post_batch(request: web.Request) -> web.Response:
    """A re-sent batch is answered item by item by the event-id dedup; a batch with no valid event changes
    nothing. An ingest slot is taken only once the body was read and its signature verified."""
    gw = gateway_of(request)
    body = await read_body(request, gw.settings.max_batch_body_bytes)
    caller = gw.verify(request, body)
    items = batch_items(decode_json(body), "events", gw.settings.max_batch_events)
    results: list[dict[str, Any] | None] = [None] * len(items)
    valid: list[tuple[int, Event]] = []
    tally: Counter[str] = Counter()  # counted once per result, not once per event (a hot path)
    for index, item in enumerate(items):
        try:
            valid.append((index, parse_event(item)))
        except ApiError as exc:
            tally["invalid"] += 1
            results[index] = _item_error(item, exc)
    if tally["invalid"]:  # counted before Redis is asked, so a 503 does not lose them
        _count("invalid", tally.pop("invalid"))
    if valid:
        rules = gw.settings.critical_rules
        with gw.admission.admitted():
            gw.readiness.require_accepting()
            answers = await gw.ingestor.submit_many(
                [IngestArgs.of(caller.source, event, critical=rules.is_critical(event)) for _, event in valid]
            )
        for (index, event), (status, detail) in zip(valid, answers, strict=True):
            tally[status] += 1
            try:
                _raise_for(status, detail)
                results[index] = {"event_id": event.event_id, "status": status}
            except ApiError as exc:
                results[index] = _item_error(items[index], exc)
                if exc.retry_after_s is not None:
                    results[index]["status"] = "rate_limited"  # type: ignore[index]
                    results[index]["retry_after_s"] = math.ceil(exc.retry_after_s)  # type: ignore[index]
    for result, events in tally.items():
        _count(result, events)
    return respond({"results": results})


def iso(ms: str | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, UTC).isoformat(timespec="milliseconds")


def lifecycle(event_id: str, record: dict[str, str]) -> dict[str, Any]:
    """The public view of an event record: never the body, the account or the openid. `last_error` is why
    the event is not delivered (null once it is); a delivered event that failed before shows that
    attempt's error as `error_before_delivery`."""
    status = EventStatus(record["status"])
    error = record.get("last_error") or None
    view: dict[str, Any] = {
        "event_id": event_id,
        "status": status,
        "attempts": int(record.get("attempts", 0)),
        "last_error": None if status is EventStatus.DELIVERED else error,
        "accepted_at": iso(record.get("accepted_ms")),
        "updated_at": iso(record.get("updated_ms")),
        "delivered_at": iso(record.get("delivered_ms")),
    }
    if status is EventStatus.DELIVERED and error:
        view["error_before_delivery"] = error
    if "msgid" in record:
        view["msgid"] = record["msgid"]
    if "finish_status" in record:  # WeChat's TEMPLATESENDJOBFINISH, see handlers/wechat_callback.py
        view["finish_status"] = record["finish_status"]
        view["finished_at"] = iso(record.get("finished_ms"))
    if "notice" in record:  # the status notice to core banking (SMS fallback), see workers/notices.py
        view["notice"] = record["notice"]
        view["notified_at"] = iso(record.get("notified_ms"))
        if record.get("notice_error"):
            view["notice_error"] = record["notice_error"]
    return view


async def get_event(request: web.Request) -> web.Response:
    gw = gateway_of(request)
    caller = gw.verify(request, b"")
    event_id = path_id(request, "event_id")
    async with gw.redis.pipeline(transaction=False) as pipe:
        for shard in range(gw.settings.shards):
            pipe.hgetall(keys.event(shard, caller.source, event_id))
        found = [record for record in await pipe.execute() if record]
    if found:
        return respond({**lifecycle(event_id, found[0]), "origin": archived.LIVE})
    # Redis let the record expire (PUSHGW_EVENT_TTL_S): the archive keeps its final state for years
    record = await archived.archived_event(request, caller.source, event_id)
    if record is None:
        raise NotFound("no such event", field="event_id")
    return respond({**lifecycle(event_id, record), "origin": archived.ARCHIVED})
