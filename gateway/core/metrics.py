"""Every Prometheus metric of pushgw, declared once. Base units, `_total` counters, bounded labels only."""

from importlib.metadata import PackageNotFoundError, version

from prometheus_client import Counter, Gauge, Histogram, Info

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

try:
    _VERSION = version("wechat-push-gateway")
except PackageNotFoundError:  # running from a source tree that was not installed
    _VERSION = "unknown"

BUILD_INFO = Info("pushgw_build", "Version of the running pushgw")
BUILD_INFO.info({"version": _VERSION})

HTTP_REQUESTS = Counter(
    "pushgw_http_requests_total", "Ingress HTTP requests answered", ["route", "method", "code"]
)
HTTP_DURATION = Histogram(
    "pushgw_http_request_duration_seconds", "Ingress request latency", ["route"], buckets=LATENCY_BUCKETS_S
)
EVENTS = Counter(
    "pushgw_events_total",
    "Events answered by the ingress, by result (queued, duplicate, digested, rate_limited, invalid, "
    "conflict, unavailable)",
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
DEAD_LETTERS = Counter("pushgw_dead_letters_total", "Entries moved to the dead-letter stream", ["reason"])
RECLAIMED = Counter(
    "pushgw_reclaimed_total", "Entries claimed from another consumer after the visibility timeout"
)
DIGESTS = Counter("pushgw_digests_total", "Digest messages queued for rate-limited events")
DELIVERY_LATENCY = Histogram(
    "pushgw_delivery_latency_seconds",
    "From acceptance by the gateway to WeChat's answer of a delivered message",
    buckets=DELIVERY_BUCKETS_S,
)
WECHAT_DURATION = Histogram(
    "pushgw_wechat_request_duration_seconds", "WeChat API call latency", ["api"], buckets=LATENCY_BUCKETS_S
)
TOKEN_REFRESHES = Counter("pushgw_token_refreshes_total", "Access token refreshes", ["result"])
CIRCUIT_OPEN = Gauge("pushgw_circuit_open", "1 while the WeChat circuit of an appid is open", ["appid"])
INFLIGHT = Gauge("pushgw_deliveries_in_flight", "Deliveries running in this worker")
REDIS_DURABLE = Gauge("pushgw_redis_durable", "1 when Redis persistence and eviction settings keep promises")
