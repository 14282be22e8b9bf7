"""The gateway's read side of the archive: a small asyncpg pool in the app's cleanup_ctx (only when
PUSHGW_ARCHIVE_URL is set), the lookups' fallback to it, and the timeline's paging cursor. With it the
gateway also samples the archive backlog (gateway/core/archive/backlog.py): the final states it hands over
at ingest and erasure stay visible to the PushgwArchiveBacklog alert even when no worker archives.

Redis answers while it holds an event's record (`"origin": "live"`); once the record expired the archive
answers in the same shape (`"origin": "archive"`). The customer timeline merges both, newest first by
(acceptance time, "source:event_id"), a live answer winning over the archived copy of the same event, and
pages back over months with `since`, `limit` and the opaque `cursor` of the previous page (`next_cursor`).
A failing archive is a 503 (Retry-After), never a silent "not found".
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from gateway.context import GATEWAY
from gateway.core.archive import backlog
from gateway.core.archive.store import ARCHIVE_ERRORS, ArchiveStore, open_pool
from gateway.core.errors import ServiceUnavailable, Unprocessable
from gateway.core.settings import Settings

ARCHIVE = web.AppKey("archive", ArchiveStore)
POOL_SIZE = 4
LIVE = "live"
ARCHIVED = "archive"

Cursor = tuple[int, str]  # (accepted unix ms, "source:event_id") of the last event of a page
Item = tuple[int, str, dict[str, Any]]  # (accepted unix ms, "source:event_id", the timeline view)


def archive_context(settings: Settings) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's archive pool and its backlog sampler; nothing when no archive is configured. The pool
    connects lazily: a gateway starts while PostgreSQL is down, and its lookups of live events never wait
    for it. Comes after the gateway's context (it samples through the gateway's Redis client)."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        if not settings.archive_url:
            yield
            return
        pool = await open_pool(settings.archive_url, max_size=POOL_SIZE)
        app[ARCHIVE] = ArchiveStore(pool)
        stopping = asyncio.Event()
        sampler = asyncio.create_task(
            backlog.sample_loop(app[GATEWAY].redis, settings.shards, stopping, backlog.SAMPLE_S),
            name="archive-backlog-sampler",
        )
        try:
            yield
        finally:
            stopping.set()
            await sampler
            await pool.close()

    return context


def archive_of(request: web.Request) -> ArchiveStore | None:
    return request.app.get(ARCHIVE)


@contextmanager
def reading() -> Iterator[None]:
    """Turn a failing archive into 503 + Retry-After."""
    try:
        yield
    except ARCHIVE_ERRORS:
        raise ServiceUnavailable(
            "the archive cannot be reached right now, retry later", retry_after_s=5
        ) from None


async def archived_event(request: web.Request, source: str, event_id: str) -> dict[str, str] | None:
    """The archived record of an event Redis no longer holds (None: not archived, or no archive)."""
    store = archive_of(request)
    if store is None:
        return None
    with reading():
        return await store.event(source, event_id)


def cursor_of(request: web.Request) -> Cursor | None:
    """The `cursor` query parameter (a page's `next_cursor`); raises Unprocessable naming it."""
    raw = request.query.get("cursor")
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        ms, member = text.split(".", 1)
        if not ms.isdigit() or ":" not in member:
            raise ValueError(text)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Unprocessable("cursor must be a next_cursor of an earlier page", field="cursor") from None
    return int(ms), member


def cursor_text(cursor: Cursor) -> str:
    return base64.urlsafe_b64encode(f"{cursor[0]}.{cursor[1]}".encode()).decode().rstrip("=")


def after(cursor: Cursor | None, ms: int, member: str) -> bool:
    """Whether an event at (ms, member) comes after the cursor, newest first (a page starts there)."""
    return cursor is None or (ms, member) < cursor


async def timeline_page(
    request: web.Request,
    customer_id: str,
    since_ms: int,
    limit: int,
    cursor: Cursor | None,
    live: list[Item],
    view: Callable[[str, dict[str, str]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the timeline: the live items (the newest `limit` after the cursor) and the archived ones
    (shaped by `view`), merged newest first, each event once. Returns (events, next_cursor or None)."""
    items = [(ms, member, {**shown, "origin": LIVE}) for ms, member, shown in live]
    store = archive_of(request)
    if store is not None:
        with reading():
            archived = await store.timeline(customer_id, since_ms, limit + len(live), cursor)
        seen = {member for _, member, _ in live}
        for member, record in archived:
            if member not in seen:
                items.append(
                    (int(record["accepted_ms"]), member, {**view(member, record), "origin": ARCHIVED})
                )
    items.sort(key=lambda item: (item[0], item[1]), reverse=True)
    page = items[:limit]
    # a full page may have more after it (the next page may then be empty)
    return [shown for _, _, shown in page], cursor_text(page[-1][:2]) if len(page) == limit else None
