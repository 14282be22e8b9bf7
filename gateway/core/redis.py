"""Redis connections and the durability checks behind "202 means durable" (persistence, eviction, the data
epoch).

The data epoch is one hash written once, by an operator, when a deployment's data is first initialised
(`pushgw epoch init`; `pushgw dev` and the test fixtures do it for themselves). No process ever writes it
on its own: a Redis without it has lost its data (restarted empty, flushed, a fresh replica promoted) or was
never initialised, and every process refuses it (each new connection checks it, the gateway's readiness
check reads it, workers wait instead of creating streams) until the epoch is there. A process that knew an
epoch, or is told it by `PUSHGW_REDIS_EPOCH`, refuses any other; one started against the epoch-less Redis
takes the epoch that comes back (the old data restored) without a restart. `pushgw epoch reset` is the
operator's acknowledgement of a fresh start, which running processes follow unless the setting names
another epoch.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import secrets
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

import hiredis
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.core import clock, keys, metrics
from gateway.core.settings import ConfigError, Settings

log = logging.getLogger(__name__)

# what hiredis encodes exactly as redis-py does, by exact type (not bool, not float; a str subclass such as
# a StrEnum goes the pure-Python way, giving the same bytes)
_C_TYPES = frozenset({str, bytes, int})
RedisClient = Redis | RedisCluster
"""A client of one Redis (`redis://`, `rediss://`, `unix://`) or of a Redis Cluster (`redis+cluster://`)."""
AnyPipeline = Pipeline | ClusterPipeline
CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")


def text_map(raw: Any) -> dict[str, str]:
    """A hash as Redis returned it (decode_responses=True), typed as the str map it is."""
    return cast(dict[str, str], raw)


_guards: weakref.WeakKeyDictionary[RedisClient, EpochGuard] = weakref.WeakKeyDictionary()

NO_EPOCH = (
    "redis lost its data or was never initialised: it holds no data epoch (restarted empty or flushed; a new"
    " deployment is initialised by `pushgw epoch init`)"
)
NO_EPOCH_BESIDE_DATA = (
    "redis holds delivery streams but no data epoch (data from before epochs, or the epoch was deleted):"
    " an operator checks it and adopts it with `pushgw epoch init`"
)
EPOCH_GONE = "redis lost its data: the data epoch is gone (restarted empty, flushed or replaced)"
EPOCH_REPLACED = "redis data epoch changed: the data was replaced underneath (restarted empty?)"


class DataLost(RedisConnectionError):
    """Redis does not hold the data epoch this process accepts: it restarted empty, its data was replaced,
    or it was never initialised.

    A ConnectionError, so every caller treats it as Redis being unavailable (503, retry later), never as
    a Redis it may write to."""


class NotDurable(RedisConnectionError):
    """A new connection found Redis without persistence or with eviction, in a process that must not
    write to such a Redis (the gateway). Raised before the connection's first command."""


UNREACHABLE = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
"""What a Redis call raises when Redis cannot be reached in time. DataLost and NotDurable are
ConnectionErrors too (so that every caller answers them with 503): catch them first to tell them apart."""

REFUSED = "redis refused the connection: "
AUTH_REQUIRED = REFUSED + "authentication required (put the password in PUSHGW_REDIS_URL: redis://:PASSWORD@)"
AUTH_FAILED = REFUSED + "authentication failed (Redis has another password or user than PUSHGW_REDIS_URL)"
PROTECTED_MODE = (
    REFUSED + "protected mode (Redis has no password, so it answers only clients on its own host: set"
    " requirepass and put the password in PUSHGW_REDIS_URL)"
)


def refusal(exc: BaseException) -> str | None:
    """What `exc` means when Redis answered but refused this client (no password or a wrong one; protected
    mode, which answers every command with DENIED), worded for an operator: never the password, never the
    server's text. None for any other error."""
    text = str(exc)
    if isinstance(exc, AuthenticationError):  # NOAUTH, WRONGPASS, ERR invalid password
        return AUTH_REQUIRED if "required" in text.lower() else AUTH_FAILED
    if isinstance(exc, ResponseError) and text.startswith("DENIED"):
        return PROTECTED_MODE
    return None


class EpochExists(Exception):
    """`init_epoch` found an epoch already: the deployment's data was initialised before."""

    def __init__(self, epoch: Epoch) -> None:
        super().__init__(f"redis already holds data epoch {epoch.epoch_id} ({epoch.how})")
        self.epoch = epoch


@dataclass
class Epoch:
    epoch_id: str
    created_ms: int
    how: str  # "init" | "adopted" (init over data from before epochs) | "operator" (reset); "first_run": old

    @classmethod
    def new(cls, how: str) -> Epoch:
        return cls(secrets.token_hex(8), clock.now_ms(), how)

    def fields(self) -> dict[str, str | int]:
        """The hash as stored at keys.EPOCH."""
        return {"id": self.epoch_id, "created_ms": self.created_ms, "how": self.how}


@dataclass
class EpochGuard:
    """The data epoch this process accepts; checked on every new connection of its client.

    `expected` (PUSHGW_REDIS_EPOCH) pins it: any other epoch, or none, is refused. Without it the first epoch
    seen is adopted (a process started against an epoch-less Redis takes the epoch that comes back); after
    that a missing or different epoch is refused, except an operator's reset, which is followed."""

    expected: str | None = None
    known: str | None = None
    lost: str | None = None  # why this Redis is refused, once the epoch went missing or changed
    # what the last new connection found about persistence and eviction (the gateway refuses on it at
    # once, instead of at its next periodic check: a Redis restarted with an evicting policy, say)
    durability_problems: tuple[str, ...] = ()
    refuse_unsafe: bool = False  # the gateway sets it: a new connection to a non-durable Redis fails

    def __post_init__(self) -> None:
        if self.expected:
            self.known = self.expected

    def accept(self, epoch: Epoch) -> str | None:
        """Compare what Redis holds with what this process accepts; returns the problem, or None."""
        if epoch.epoch_id == self.known:
            return self._refuse(None)
        if self.expected:
            return self._refuse(
                f"redis data epoch changed: redis holds {epoch.epoch_id}, PUSHGW_REDIS_EPOCH names"
                f" {self.expected} (the data was replaced, or the setting was not updated after a reset)"
            )
        if self.known is None:
            log.info("redis data epoch found", extra={"epoch": epoch.epoch_id, "how": epoch.how})
            self.known = epoch.epoch_id
            return self._refuse(None)
        if epoch.how == "operator":  # an operator acknowledged a fresh start: follow it
            log.warning("redis data epoch changed by an operator: following the new epoch")
            self.known = epoch.epoch_id
            return self._refuse(None)
        return self._refuse(EPOCH_REPLACED)

    def missing(self, never_known: str = NO_EPOCH) -> str:
        """Redis holds no epoch: records and returns the problem (`never_known` when this process never
        knew one)."""
        problem = never_known if self.known is None else EPOCH_GONE
        self._refuse(problem)
        return problem

    def _refuse(self, problem: str | None) -> str | None:
        """Record the problem (None: this Redis is fine again); logs once per change, sets the metric."""
        if problem != self.lost:
            if problem is None:
                log.warning("redis data epoch found again: accepting this redis")
            else:
                log.error("refusing redis until its data epoch is back or acknowledged: %s", problem)
        self.lost = problem
        metrics.REDIS_DATA_LOST.set(0 if problem is None else 1)
        return problem

    async def on_connect(self, connection: AbstractConnection) -> None:
        """redis-py's connect hook: a Redis restart means new connections, so a restarted-empty Redis is
        refused before its first command, not only at the next readiness check."""
        await connection.on_connect()
        await connection.send_command("HGETALL", keys.EPOCH)
        epoch = _epoch_from(text_map(_pairs(await connection.read_response())))
        self.durability_problems = tuple(await _durability_on(connection))
        problem = self.missing() if epoch is None else self.accept(epoch)
        if problem is not None:
            raise DataLost(problem)
        if self.refuse_unsafe and self.durability_problems:
            raise NotDurable("; ".join(self.durability_problems))


async def _durability_on(connection: AbstractConnection) -> list[str]:
    config: dict[str, str] = {}
    try:
        for name in ("appendonly", "maxmemory-policy"):
            await connection.send_command("CONFIG", "GET", name)
            config.update(_pairs(await connection.read_response()))
    except ResponseError:  # CONFIG renamed away: unknown is not durable
        return ["cannot read Redis persistence settings (ResponseError)"]
    return Durability(config.get("appendonly") == "yes", "", config.get("maxmemory-policy", "")).problems


def _pairs(raw: Any) -> dict[str, str]:
    """A raw HGETALL reply (a flat list on RESP2, a map on RESP3) as a dict."""
    if isinstance(raw, dict):
        return {_text(k): _text(v) for k, v in raw.items()}
    items = [_text(item) for item in raw or []]
    return dict(zip(items[::2], items[1::2], strict=True))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _epoch_from(record: dict[str, str]) -> Epoch | None:
    if not record.get("id"):
        return None
    return Epoch(record["id"], int(record.get("created_ms", 0)), record.get("how", ""))


def guard_of(redis: RedisClient) -> EpochGuard:
    """The epoch guard of a client made by `connect` (a fresh, unchecked one for any other client)."""
    guard = _guards.get(redis)
    if guard is None:
        guard = _guards[redis] = EpochGuard()
    return guard


async def read_epoch(redis: RedisClient) -> Epoch | None:
    """The epoch Redis holds (None: none), on a decoding client or not."""
    return _epoch_from(_pairs(await redis.hgetall(keys.EPOCH)))


async def write_epoch(redis: RedisClient, how: str, *, replace: bool = False) -> Epoch:
    """Write a new epoch (only if none exists, unless `replace`); returns the epoch Redis now holds.
    Only operators' commands and fixtures call it (`init_epoch`, `pushgw epoch reset`): never a process
    deciding by itself that an empty Redis is new."""
    epoch = Epoch.new(how)
    if replace:
        await redis.delete(keys.EPOCH)
    if await redis.hsetnx(keys.EPOCH, "id", epoch.epoch_id):
        await redis.hset(keys.EPOCH, mapping={"created_ms": epoch.created_ms, "how": how})
    found = await read_epoch(redis)
    if found is None:  # deleted between the two calls: an operator is at work, try again later
        raise DataLost("the data epoch disappeared while it was written")
    return found


async def _streams_exist(redis: RedisClient, shards: int) -> bool:
    return any([bool(await redis.exists(keys.stream(shard))) for shard in range(shards)])


async def init_epoch(redis: RedisClient, shards: int) -> Epoch:
    """The explicit first initialisation of a deployment's data (`pushgw epoch init`): write the epoch, how
    "init", or "adopted" when delivery streams exist already (data from before epochs). Raises EpochExists
    when Redis holds an epoch (nothing is written)."""
    found = await read_epoch(redis)
    if found is not None:
        raise EpochExists(found)
    how = "adopted" if await _streams_exist(redis, shards) else "init"
    epoch = await write_epoch(redis, how)
    if epoch.how != how:  # another init won the race
        raise EpochExists(epoch)
    log.warning("redis data epoch initialised", extra={"epoch": epoch.epoch_id, "how": epoch.how})
    return epoch


async def check_epoch(redis: RedisClient, shards: int) -> str | None:
    """Read the data epoch and compare it with what this client accepts; returns the problem, or None.

    Never writes: a Redis without an epoch is refused (NO_EPOCH names both causes: data lost, or a deployment
    never initialised; beside delivery streams it is data from before epochs, or an epoch deleted by hand).
    Raises RedisError when Redis cannot be read."""
    guard = guard_of(redis)
    epoch = await read_epoch(redis)
    if epoch is None:
        if guard.known is None and await _streams_exist(redis, shards):
            return guard.missing(NO_EPOCH_BESIDE_DATA)
        return guard.missing()
    return guard.accept(epoch)


def connect(settings: Settings, *, max_connections: int = 64, epoch_guard: bool = True) -> RedisClient:
    """A pooled client with the Redis deadline as socket timeout, whose connections check the data epoch
    (see EpochGuard; PUSHGW_REDIS_EPOCH pins it). A `redis+cluster://` URL gives a RedisCluster client (see
    `connect_cluster`). `epoch_guard=False`: a client for operators' commands that inspect or initialise an
    epoch-less Redis (`pushgw epoch`, `pushgw reconcile`)."""
    if settings.redis_url.startswith(CLUSTER_SCHEMES):
        cluster = connect_cluster(settings, max_connections=max_connections)
        if epoch_guard:
            _guards[cluster] = EpochGuard(expected=settings.redis_epoch or None)
        return cluster
    guard = EpochGuard(expected=settings.redis_epoch or None)
    # a blocking pool: a caller beyond max_connections waits (within the deadline) instead of failing
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=max_connections,
        timeout=settings.redis_timeout_s,
        health_check_interval=10,
        redis_connect_func=guard.on_connect if epoch_guard else None,
    )
    pool.connection_class = _read_within_deadline(packing_in_c(pool.connection_class))
    client = Redis.from_pool(pool)
    if epoch_guard:
        _guards[client] = guard
    return client


def packing_in_c(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The connection class with RESP encoding by hiredis (C) instead of redis-py's pure-Python
    `pack_command`, which the profiles showed as a hot spot (about 12 us a command, 1.7 us in C). Anything
    hiredis cannot encode goes the pure-Python way, so the wire bytes and the errors stay redis-py's."""
    python_pack = connection_class.pack_command

    def pack_command(self: AbstractConnection, *args: Any) -> list[bytes]:
        command = args[0]
        if isinstance(command, str) and " " in command:  # "CONFIG GET": the words go as separate arguments
            args = (*command.split(), *args[1:])
        if _C_TYPES.issuperset(map(type, args)):  # one C loop over the arguments
            return [hiredis.pack_command(args)]
        return python_pack(self, *args)

    return type(f"CPacked{connection_class.__name__}", (connection_class,), {"pack_command": pack_command})


_UNDER_DEADLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("pushgw_redis_deadline", default=False)


@asynccontextmanager
async def deadline(seconds: float) -> AsyncIterator[None]:
    """Bound a whole round trip (a pipeline of many replies) by one timer: its replies are read without
    redis-py's per-reply socket timeout, an `asyncio.timeout` for every reply that the profiles showed.
    Raises TimeoutError when the round trip outlives `seconds` (its connection is dropped, never reused
    half-read)."""
    token = _UNDER_DEADLINE.set(True)
    try:
        async with asyncio.timeout(seconds):
            yield
    finally:
        _UNDER_DEADLINE.reset(token)


def _read_within_deadline(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The connection class whose reads inside `deadline` wait without a timer of their own."""
    read_response = connection_class.read_response

    async def read_within_deadline(
        self: AbstractConnection, disable_decoding: bool = False, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        if timeout is None and _UNDER_DEADLINE.get():
            timeout = math.inf  # redis-py: no timeout for this read (the deadline around it bounds it)
        return await read_response(self, disable_decoding, timeout, **kwargs)

    name = f"Deadline{connection_class.__name__}"
    return type(name, (connection_class,), {"read_response": read_within_deadline})


def cluster_seeds(url: str) -> tuple[list[ClusterNode], dict[str, Any]]:
    """The seed nodes and connection options of `redis+cluster://[user[:password]@]host:port[,host:port]`
    (`rediss+cluster://` for TLS). Raises ConfigError naming the variable."""
    scheme, _, rest = url.partition("://")
    userinfo, _, hosts = rest.rpartition("@")
    hosts = hosts.split("/", 1)[0]
    options: dict[str, Any] = {"ssl": scheme == "rediss+cluster"}
    if userinfo:
        user, _, password = userinfo.partition(":")
        options.update(username=unquote(user) or None, password=unquote(password) or None)
    seeds = []
    for part in hosts.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"PUSHGW_REDIS_URL: cluster seed {part!r} is not host:port")
        seeds.append(ClusterNode(host.strip("[]"), int(port)))
    return seeds, options


def _closed_underneath(exc: Exception) -> bool:
    """redis-py's asyncio cluster client closes connections when it refreshes its topology (a failover)
    while other commands still use them; those fail with AttributeError/TypeError on a None reader or
    writer instead of a ConnectionError."""
    return isinstance(exc, AttributeError | TypeError) and "NoneType" in str(exc)


class _ClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except (AttributeError, TypeError) as exc:
            if not _closed_underneath(exc):
                raise
            raise RedisConnectionError(f"cluster connection closed underneath: {exc}") from exc


class Cluster(RedisCluster):
    """RedisCluster whose commands and pipelines fail with ConnectionError (Redis unavailable: 503, retry
    later), never AttributeError, when a topology refresh closed their connection underneath; its node
    connections encode RESP in C, as the single-Redis client's do (`loadtest/client_bench.py --cluster`:
    0.72x the client CPU of a pipelined ingest call)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # RedisCluster fixes its connection class; the node manager makes every node's from these kwargs
        packed = cast(type[Connection], packing_in_c(self.connection_kwargs["connection_class"]))
        self.connection_kwargs["connection_class"] = packed
        for node in self.nodes_manager.startup_nodes.values():
            node.connection_class = packed

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (AttributeError, TypeError) as exc:
            if not _closed_underneath(exc):
                raise
            raise RedisConnectionError(f"cluster connection closed underneath: {exc}") from exc

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise ValueError("shard_hint is not supported on a cluster")
        return _ClusterPipeline(self, transaction)  # type: ignore[abstract]  # as RedisCluster.pipeline builds it


def connect_cluster(settings: Settings, *, max_connections: int = 64) -> RedisCluster:
    """A Redis Cluster client found through the URL's seed nodes (not connected until its first command).

    `max_connections` is per node; past it a command fails at once (MaxConnectionsError, a ConnectionError:
    503 on ingress) instead of waiting. A command meeting a dead primary is retried twice after a topology
    refresh; callers bound it by their own deadline. The data epoch is checked by `check_epoch` (readiness,
    worker start), not on each new connection: a connection of a cluster node cannot read a key of
    another node's slots."""
    seeds, options = cluster_seeds(settings.redis_url)
    return Cluster(
        startup_nodes=seeds,
        decode_responses=True,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        max_connections=max_connections,
        health_check_interval=10,
        retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
        **options,
    )


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


async def check_durability(redis: RedisClient) -> Durability:
    """Read the persistence settings (raises RedisError if CONFIG is refused or Redis is down). On a
    cluster every primary is read and the weakest answer wins: one primary without AOF, or one that may
    evict, makes the whole cluster not durable (its shards would lose acknowledged events)."""
    if isinstance(redis, RedisCluster):
        return await _cluster_durability(redis)
    config = await redis.config_get("append*")
    config.update(await redis.config_get("maxmemory-policy"))
    return _durability(config)


async def _cluster_durability(redis: RedisCluster) -> Durability:
    await redis.initialize()  # a topology refresh after a failover has to happen before its primaries
    nodes = redis.get_primaries()
    configs = await asyncio.gather(*(_node_config(redis, node) for node in nodes))
    found = [_durability(config) for config in configs]
    fsync_order = ["always", "everysec", "no"]
    return Durability(
        appendonly=all(d.appendonly for d in found),
        appendfsync=max((d.appendfsync for d in found), key=lambda mode: _rank(fsync_order, mode)),
        maxmemory_policy=next(
            (d.maxmemory_policy for d in found if d.maxmemory_policy != "noeviction"), "noeviction"
        ),
    )


async def _node_config(redis: RedisCluster, node: ClusterNode) -> dict[Any, Any]:
    config: dict[Any, Any] = dict(await redis.config_get("append*", target_nodes=node))
    config.update(await redis.config_get("maxmemory-policy", target_nodes=node))
    return config


def _rank(order: list[str], value: str) -> int:
    return order.index(value) if value in order else len(order)


def _durability(config: dict[Any, Any]) -> Durability:
    return Durability(
        appendonly=config.get("appendonly") == "yes",
        appendfsync=str(config.get("appendfsync", "")),
        maxmemory_policy=str(config.get("maxmemory-policy", "")),
    )


async def ensure_groups(redis: RedisClient, shards: int) -> None:
    """Create each shard's stream and consumer group from the stream's start (id 0), never at `$`:
    a group made at `$` would skip entries that are already queued. The data epoch is checked first:
    raises DataLost (a RedisError) when Redis holds no epoch or another one than this client accepts, so a
    worker waits instead of creating streams and groups on an emptied (or never initialised) Redis."""
    problem = await check_epoch(redis, shards)
    if problem is not None:
        raise DataLost(problem)
    for shard in range(shards):
        for stream, group in keys.consumer_groups(shard):
            try:
                await redis.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
