"""`pushgw archive migrate|prune|status`: the operator's commands for the PostgreSQL archive.

`migrate` applies the schema's migrations not applied yet and makes the coming months' partitions: safe to run
again (a second run applies nothing) and from two places at once (an advisory lock). `prune` drops the months
wholly older than PUSHGW_ARCHIVE_RETENTION_DAYS now (workers do it daily). `status` says which migrations
are pending and which monthly partitions exist. Each prints one JSON object; exit status 0, or 1 when no
archive is configured or it cannot be reached (or, for `status`, migrations are pending).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg
import orjson

from gateway.core.archive import schema
from gateway.core.archive.store import ARCHIVE_ERRORS, CONNECT_TIMEOUT_S
from gateway.core.settings import Settings, without_password


def _print(shown: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(shown).decode() + "\n")


async def run_archive(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.archive_url:
        _print({"error": "PUSHGW_ARCHIVE_URL is empty: no archive is configured"})
        return 1
    try:
        conn = await asyncpg.connect(settings.archive_url, timeout=CONNECT_TIMEOUT_S)
    except ARCHIVE_ERRORS as exc:
        _print({"error": f"cannot reach {without_password(settings.archive_url)}: {type(exc).__name__}"})
        return 1
    try:
        if args.action == "migrate":
            applied = await schema.migrate(conn)
            _print({"applied": applied, "partitions": await schema.partitions(conn)})
            return 0
        if args.action == "prune":
            dropped = await schema.prune(conn, settings.archive_retention_days)
            _print({"dropped": dropped, "retention_days": settings.archive_retention_days})
            return 0
        pending = await schema.pending(conn)
        partitions = await schema.partitions(conn) if len(pending) < len(schema.migrations()) else []
        _print({"pending": pending, "partitions": partitions})
        return 1 if pending else 0
    finally:
        await conn.close()
