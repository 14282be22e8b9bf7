"""Every Prometheus metric of pushgw, declared once. Base units, `_total` counters, bounded labels only.

Labels are bounded sets (route, outcome, errcode, reason, result, shard, appid): never a customer id, event
id, openid or account. The queue and Redis gauges are read from Redis by the workers' queue monitor
(`workers/queue_monitor.py`) and exposed by `QUEUE`, a collector, so they are what Redis says, not guesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TypeVar

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

# Service level objectives. Each latency histogram has a bucket on each threshold, so every SLI is exact
# (tests/observability/test_metrics.py checks it; deploy/alerts.yml and the dashboard use these `le`s).
SLO_DELIVERED_WITHIN_S = 30.0  # a message reaches WeChat within 30 s of acceptance ...
SLO_DELIVERY_OBJECTIVE = 0.99  # ... for 99% of messages (dead letters count as late)
SLO_DELIVERED_FAST_S = 5.0  # what a normal day looks like (dashboard stat)
SLO_INGRESS_WITHIN_S = 0.25  # the ingress answers within 250 ms ...
SLO_INGRESS_OBJECTIVE = 0.999  # ... and without a 5xx, for 99.9% of requests

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
# the critical SLO is "within 2 s"; finer buckets below it
CRITICAL_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)

try:
    _VERSION = version("wechat-push-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    _VERSION = "unknown"

BUILD_INFO = Info("pushgw_build", "Version of the running pushgw")
BUILD_INFO.info({"version": _VERSION})

_M = TypeVar("_M", bound=MetricWrapperBase)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})


@cache
def child(family: _M, *labels: str) -> _M:
    """The labelled child of a metric, looked up once (`labels()` on every request and delivery showed in the
    profiles). Only for label values from a bounded set: every combination stays cached."""
    return family.labels(*labels)


HTTP_REQUESTS = Counter(
    "pushgw_http_requests_total", "Ingress HTTP requests answered", ["route", "method", "code"]
)
HTTP_DURATION = Histogram(
    "pushgw_http_request_duration_seconds", "Ingress request latency", ["route"], buckets=LATENCY_BUCKETS_S
)
EVENTS = Counter(
    "pushgw_events_total",
    "Events answered by the ingress, by result (queued, duplicate, digested, suppressed, rate_limited, "
    "invalid, conflict, unavailable)",
    ["result"],
)
INGEST_BATCH = Histogram(
    "pushgw_ingest_batch_events",
    "Events sent to Redis in one round trip",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
DELIVERIES = Counter(
    "pushgw_deliveries_total", "Delivery attempts by outcome and WeChat errcode", ["outcome", "errcode"]
)
RETRIES = Counter("pushgw_retries_total", "Deliveries scheduled for another attempt", ["reason"])
DEAD_LETTERS = Counter(  # reason: `max_attempts: <errcode>`, `max_age: <errcode>`, `render`, ... (bounded)
    "pushgw_dead_letters_total", "Entries moved to the dead-letter stream", ["reason"]
)
RECLAIMED = Counter(
    "pushgw_reclaimed_total", "Entries claimed from another consumer after the visibility timeout"
)
DIGESTS = Counter("pushgw_digests_total", "Digest messages queued for rate-limited events")
ERASURE_RESULTS = ("erased", "nothing_held")
ERASURES = Counter(
    "pushgw_erasures_total",
    "Customer erasures carried out (DELETE /v1/customers/{id}): erased, or nothing_held (a repeat)",
    ["result"],
)
for _result in ERASURE_RESULTS:
    ERASURES.labels(_result)
# the PostgreSQL archive (workers/archive.py): rows by result, failed batches, and what waits in Redis for it
ARCHIVE_RESULTS = ("written", "stale", "invalid")
ARCHIVE_ROWS = Counter(
    "pushgw_archive_rows_total",
    "Final states handed to the PostgreSQL archive, by result (written: stored or newer than the stored one;"
    " stale: the archive already holds that state or a later one; invalid: an entry that is no record)",
    ["result"],
)
for _result in ARCHIVE_RESULTS:
    ARCHIVE_ROWS.labels(_result)
ARCHIVE_WRITE_ERRORS = Counter(
    "pushgw_archive_write_errors_total",
    "Archive batches PostgreSQL did not take (unreachable, failing): their entries wait in Redis, retried",
)
ARCHIVE_BACKLOG = Gauge(
    "pushgw_archive_backlog",
    "Final states in Redis not yet archived: unread or pending entries of the archiver group, all shards",
    multiprocess_mode="livemax",
)
ARCHIVE_LAG = Gauge(
    "pushgw_archive_lag_seconds",
    "Age of the oldest final state not yet archived (0 when none)",
    multiprocess_mode="livemax",
)
DELIVERY_LATENCY = Histogram(
    "pushgw_delivery_latency_seconds",
    "From acceptance by the gateway to WeChat's answer of a delivered message",
    buckets=DELIVERY_BUCKETS_S,
)
CRITICAL_DELIVERY_LATENCY = Histogram(
    "pushgw_critical_delivery_latency_seconds",
    "From acceptance to WeChat's answer of a delivered critical event (its own stream and SLO)",
    buckets=CRITICAL_BUCKETS_S,
)
NOTICE_INFLIGHT = Gauge(
    "pushgw_notices_in_flight",
    "Status notices to core banking being posted by this worker",
    multiprocess_mode="livesum",
)
# the notice types finish.lua and finish_event.lua queue ("event." + the final status, or user_blocked)
NOTICE_TYPES = (
    "event.failed",
    "event.dead_lettered",
    "event.no_binding",
    "event.delivered",
    "event.user_blocked",
)
NOTICE_OUTCOMES = ("sent", "retried", "failed", "dead_lettered")
NOTICES = Counter(
    "pushgw_notices_total",
    "Status notice POSTs to core banking by outcome (sent, retried, failed, dead_lettered) and type",
    ["outcome", "type"],
)
for _outcome in NOTICE_OUTCOMES:
    for _type in NOTICE_TYPES:
        NOTICES.labels(_outcome, _type)
NOTICE_DURATION = Histogram(
    "pushgw_notice_request_duration_seconds",
    "Latency of one notice POST to core banking's callback URL (answered, timed out or refused)",
    buckets=LATENCY_BUCKETS_S,
)
FINISH_LATENCY = Histogram(
    "pushgw_delivery_finish_latency_seconds",
    "From acceptance by the gateway to WeChat's delivery-finished event (TEMPLATESENDJOBFINISH)",
    buckets=DELIVERY_BUCKETS_S,
)
WECHAT_DURATION = Histogram(
    "pushgw_wechat_request_duration_seconds", "WeChat API call latency", ["api"], buckets=LATENCY_BUCKETS_S
)
WECHAT_FINISH_EVENTS = Counter(
    "pushgw_wechat_finish_events_total",
    "WeChat delivery-finished callbacks, by status (success, failed:user block, failed: system failed, "
    "duplicate, unknown_msgid, recipient_mismatch (a msgid we did not send to that user: ignored), other)",
    ["status"],
)
# why /wechat/callback refused a request (handlers/wechat_callback.py); a rise of any but `xml` or `too_large`
# is a forged or replayed callback, or a token, EncodingAESKey or appid that disagrees with WeChat's
WECHAT_CALLBACK_REFUSALS = ("signature", "stale", "plaintext", "undecryptable", "appid", "xml", "too_large")
WECHAT_CALLBACKS_REFUSED = Counter(
    "pushgw_wechat_callbacks_refused_total",
    "WeChat callbacks refused, by reason (signature, stale, plaintext, undecryptable, appid, xml, too_large)",
    ["reason"],
)
for _reason in WECHAT_CALLBACK_REFUSALS:
    WECHAT_CALLBACKS_REFUSED.labels(_reason)
TOKEN_REFRESHES = Counter(
    "pushgw_token_refreshes_total", "Access token refreshes per official account", ["appid", "result"]
)
ACCOUNT_DELIVERIES = Counter(
    "pushgw_account_deliveries_total",
    "Delivery attempts per WeChat official account (a configured appid) by outcome",
    ["appid", "outcome"],
)
# How the gauges of several processes of one component combine (`--processes N` > 1, see metrics_server.py):
# in-flight deliveries add up; a circuit is open if any process has it open; Redis is durable only if every
# gateway process finds it so; the event-loop lag is the worst process's. "live" modes forget exited ones.
CIRCUIT_OPEN = Gauge(
    "pushgw_circuit_open",
    "1 while the WeChat circuit of an appid is open",
    ["appid"],
    multiprocess_mode="livemax",
)
INFLIGHT = Gauge(
    "pushgw_deliveries_in_flight", "Deliveries running in this worker", multiprocess_mode="livesum"
)
REDIS_DURABLE = Gauge(
    "pushgw_redis_durable",
    "1 when Redis persistence and eviction settings keep promises (kept while Redis cannot be reached)",
    multiprocess_mode="livemin",
)
REDIS_DATA_LOST = Gauge(
    "pushgw_redis_data_lost",
    "1 while Redis holds no data epoch, or another than this process knew or PUSHGW_REDIS_EPOCH names"
    " (restarted empty, flushed, replaced, or never initialised): it is refused",
    multiprocess_mode="livemax",
)
INGRESS_SHED = Counter(
    "pushgw_ingress_shed_total", "Ingest requests refused early (503) because too many were waiting"
)
INGRESS_WAITING = Gauge(
    "pushgw_ingress_waiting_requests",
    "Ingest requests admitted and not yet answered",
    multiprocess_mode="livesum",
)
INGRESS_CONNECTIONS = Gauge(
    "pushgw_ingress_connections", "Open connections of the gateway's listeners", multiprocess_mode="livesum"
)
# why the gateway closed an ingress connection itself: its headers came too slowly, it was the longest
# stalled one when the connection limit was reached (evicted), or the limit was reached with none stalled
INGRESS_CONNECTION_CLOSES = ("header_timeout", "evicted", "refused")
INGRESS_CONNECTIONS_CLOSED = Counter(
    "pushgw_ingress_connections_closed_total",
    "Ingress connections the gateway closed, by reason (header_timeout, evicted, refused)",
    ["reason"],
)
for _reason in INGRESS_CONNECTION_CLOSES:
    INGRESS_CONNECTIONS_CLOSED.labels(_reason)
EVENT_LOOP_LAG = Gauge(
    "pushgw_event_loop_lag_seconds",
    "How late this process's event loop ran its last timer tick",
    multiprocess_mode="livemax",
)

# Known label values start at 0, so rate() and the alerts see the first increment (the per-appid series of
# token refreshes start when the worker makes each account's token cache).


@dataclass(frozen=True)
class ShardQueue:
    """One shard's delivery stream and its side sets, as Redis reported them."""

    shard: int
    stream_length: int
    lag: int  # entries the consumer group has not read yet
    pending: int  # entries read but not acknowledged
    oldest_pending_age_s: float
    oldest_unread_age_s: float
    consumers: int
    active_consumers: int  # consumers that polled the stream within ACTIVE_CONSUMER_IDLE_S
    scheduled_retries: int
    dead_letters: int
    digests_held: int
    notice_retries: int = 0  # status notices to core banking waiting for another attempt
    notice_dead_letters: int = 0  # status notices that will not be posted without a replay
    critical_waiting: int = 0  # critical events not yet read, or read and not yet finished


@dataclass(frozen=True)
class RedisHealth:
    """What Redis INFO says about memory, load and persistence."""

    used_memory_bytes: int
    maxmemory_bytes: int
    commands_processed: int
    connected_clients: int
    aof_enabled: bool
    aof_last_write_ok: bool
    evicts: bool = False  # maxmemory-policy is not noeviction

    @property
    def durable(self) -> bool:
        """The promise's conditions, as the gateway's readiness check reads them."""
        return self.aof_enabled and not self.evicts


@dataclass(frozen=True)
class QueueSnapshot:
    shards: tuple[ShardQueue, ...]
    redis: RedisHealth


_SHARD_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("pushgw_stream_length", "stream_length", "Entries in the delivery stream (read or not)"),
    ("pushgw_consumer_lag", "lag", "Stream entries the consumer group has not read yet"),
    ("pushgw_pending_entries", "pending", "Stream entries read by a consumer and not yet acknowledged"),
    (
        "pushgw_oldest_pending_age_seconds",
        "oldest_pending_age_s",
        "Age of the oldest read but unacknowledged entry (0 when none)",
    ),
    (
        "pushgw_oldest_unread_age_seconds",
        "oldest_unread_age_s",
        "Age of the oldest entry the consumer group has not read yet (0 when none)",
    ),
    ("pushgw_consumers", "consumers", "Consumers known to the delivery group"),
    ("pushgw_active_consumers", "active_consumers", "Consumers that polled the stream recently"),
    ("pushgw_scheduled_retries", "scheduled_retries", "Deliveries waiting in the scheduled-retry set"),
    ("pushgw_dead_letter_entries", "dead_letters", "Entries in the dead-letter stream"),
    ("pushgw_digests_held", "digests_held", "Customers with rate-limited events held for a digest"),
    ("pushgw_notice_scheduled_retries", "notice_retries", "Status notices waiting for another POST attempt"),
    ("pushgw_notice_dead_letter_entries", "notice_dead_letters", "Entries in the notice dead-letter stream"),
    (
        "pushgw_critical_waiting",
        "critical_waiting",
        "Critical events on the critical stream not yet read or not yet finished (lag + pending)",
    ),
)


class QueueCollector(Collector):
    """The last queue snapshot a worker read from Redis, as gauges labelled by shard.

    `update(None)` records that Redis could not be read: `pushgw_redis_up` goes to 0 and the queue series
    disappear (a stale backlog figure is worse than none). With several worker processes the answering
    process serves its own snapshot as it is (every process reads the same Redis): never summed."""

    def __init__(self) -> None:
        self._snapshot: QueueSnapshot | None = None
        self._attempted = False

    def update(self, snapshot: QueueSnapshot | None) -> None:
        self._snapshot = snapshot
        self._attempted = True

    def describe(self) -> Iterator[Metric]:
        return self._families(None, describe=True)

    def collect(self) -> Iterator[Metric]:
        if not self._attempted:
            return iter(())
        return self._families(self._snapshot, describe=False)

    @staticmethod
    def _families(snapshot: QueueSnapshot | None, *, describe: bool) -> Iterator[Metric]:
        up = GaugeMetricFamily("pushgw_redis_up", "1 when the last queue sample could read Redis")
        if not describe:
            up.add_metric([], 1 if snapshot is not None else 0)
        yield up
        for name, attribute, documentation in _SHARD_GAUGES:
            family = GaugeMetricFamily(name, documentation, labels=["shard"])
            for shard in snapshot.shards if snapshot is not None else ():
                family.add_metric([str(shard.shard)], getattr(shard, attribute))
            yield family
        yield from _redis_families(snapshot.redis if snapshot is not None else None)


def _redis_families(health: RedisHealth | None) -> Iterator[Metric]:
    families = {
        "used": GaugeMetricFamily("pushgw_redis_used_memory_bytes", "Memory Redis uses (INFO used_memory)"),
        "max": GaugeMetricFamily("pushgw_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)"),
        "clients": GaugeMetricFamily("pushgw_redis_connected_clients", "Clients connected to Redis"),
        "aof": GaugeMetricFamily("pushgw_redis_aof_enabled", "1 when Redis writes an append-only file"),
        "aof_ok": GaugeMetricFamily(
            "pushgw_redis_aof_last_write_ok", "1 when Redis's last append-only file write succeeded"
        ),
    }
    commands = CounterMetricFamily(
        "pushgw_redis_commands_processed", "Commands Redis processed since it started"
    )
    if health is not None:
        families["used"].add_metric([], health.used_memory_bytes)
        families["max"].add_metric([], health.maxmemory_bytes)
        families["clients"].add_metric([], health.connected_clients)
        families["aof"].add_metric([], 1 if health.aof_enabled else 0)
        families["aof_ok"].add_metric([], 1 if health.aof_last_write_ok else 0)
        commands.add_metric([], health.commands_processed)
    yield from families.values()
    yield commands


QUEUE = QueueCollector()
REGISTRY.register(QUEUE)
