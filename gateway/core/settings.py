"""One frozen Settings for every process, built once from `PUSHGW_*` variables or the matching CLI flags."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ConfigError", "RateLimit", "Settings"]


class ConfigError(ValueError):
    """A setting has a bad value; the message names the variable."""


@dataclass(frozen=True)
class RateLimit:
    """At most `count` messages per customer in any `window_s` seconds."""

    count: int
    window_s: int

    def __str__(self) -> str:
        return f"{self.count}/{self.window_s}"


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be >= 0")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _pairs(separator: str) -> Callable[[str], dict[str, str]]:
    def parse(raw: str) -> dict[str, str]:
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, sep, value = item.partition(separator)
            if not sep or not name or not value:
                raise ValueError(f"each item must look like name{separator}value")
            pairs[name] = value
        return pairs

    return parse


def _rate_limit(raw: str) -> RateLimit:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", raw)
    if not match or int(match[1]) <= 0 or int(match[2]) <= 0:
        raise ValueError("must look like N/W, e.g. 5/60")
    return RateLimit(int(match[1]), int(match[2]))


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return raw

    return parse


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://", "redis+cluster://")):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
    return raw


def _setting(env: str, parse: Callable[[str], Any], default: Any, help: str, secret: bool = False) -> Any:
    metadata = {"env": env, "parse": parse, "help": help, "secret": secret}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """Every knob of gateway, worker and dev. Build with `Settings.from_env`; never read os.environ later."""

    redis_url: str = _setting(
        "PUSHGW_REDIS_URL", _redis_url, "redis://127.0.0.1:6379/0", "Redis (or redis+cluster://) to use"
    )
    redis_timeout_s: float = _setting(
        "PUSHGW_REDIS_TIMEOUT_S", _positive_float, 2.0, "deadline for one Redis round trip; past it -> 503"
    )
    require_durable_redis: bool = _setting(
        "PUSHGW_REQUIRE_DURABLE_REDIS",
        _bool,
        True,
        "refuse to accept unless Redis has AOF persistence and maxmemory-policy noeviction",
    )
    api_keys: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_API_KEYS", _pairs(":"), {}, "ingress keys as keyid:secret,keyid:secret", secret=True
    )
    open_ingress: bool = _setting(
        "PUSHGW_OPEN_INGRESS", _bool, False, "accept unsigned requests (development only)"
    )
    signature_window_s: int = _setting(
        "PUSHGW_SIGNATURE_WINDOW_S", _positive_int, 300, "max age (and clock skew) of a signed request"
    )
    max_body_bytes: int = _setting(
        "PUSHGW_MAX_BODY_BYTES", _positive_int, 16 * 1024, "largest single-event request body"
    )
    max_batch_events: int = _setting(
        "PUSHGW_MAX_BATCH_EVENTS", _positive_int, 500, "most events in one batch request"
    )
    max_batch_body_bytes: int = _setting(
        "PUSHGW_MAX_BATCH_BODY_BYTES", _positive_int, 2 * 1024 * 1024, "largest batch request body"
    )
    event_ttl_s: int = _setting(
        "PUSHGW_EVENT_TTL_S", _positive_int, 3 * 86400, "how long dedup and status records live (>= 86400)"
    )
    rate_limit: RateLimit = _setting(  # noqa: RUF009 - RateLimit is frozen
        "PUSHGW_RATE_LIMIT", _rate_limit, RateLimit(5, 60), "per-customer limit: N messages per W seconds"
    )
    rate_policy: str = _setting(
        "PUSHGW_RATE_POLICY", _choice("digest", "reject"), "digest", "over the limit: digest or reject (429)"
    )
    ingest_coalesce: bool = _setting(
        "PUSHGW_INGEST_COALESCE",
        _bool,
        True,
        "share Redis round trips between concurrent single-event requests (off: one round trip each)",
    )
    shards: int = _setting("PUSHGW_SHARDS", _positive_int, 1, "number of delivery streams (by customer)")
    wechat_base_url: str = _setting(
        "PUSHGW_WECHAT_BASE_URL", str, "https://api.weixin.qq.com", "WeChat API base URL"
    )
    wechat_appid: str = _setting("PUSHGW_WECHAT_APPID", str, "", "WeChat official account appid")
    wechat_secret: str = _setting(
        "PUSHGW_WECHAT_SECRET", str, "", "WeChat official account AppSecret", secret=True
    )
    wechat_timeout_s: float = _setting(
        "PUSHGW_WECHAT_TIMEOUT_S", _positive_float, 5.0, "total timeout of one WeChat API call"
    )
    wechat_callback_token: str = _setting(
        "PUSHGW_WECHAT_CALLBACK_TOKEN",
        str,
        "",
        "token of WeChat's server-URL signature for /wechat/callback (empty: the endpoint answers 404)",
        secret=True,
    )
    token_refresh_margin_s: int = _setting(
        "PUSHGW_TOKEN_REFRESH_MARGIN_S",
        _positive_int,
        120,
        "refresh the access token this long before expiry (keep under WeChat's 300 s overlap)",
    )
    worker_concurrency: int = _setting(
        "PUSHGW_WORKER_CONCURRENCY", _positive_int, 64, "deliveries in flight per worker process"
    )
    read_batch: int = _setting("PUSHGW_READ_BATCH", _positive_int, 64, "most stream entries read at once")
    reclaim_idle_s: int = _setting(
        "PUSHGW_RECLAIM_IDLE_S", _positive_int, 30, "visibility timeout before another worker claims an entry"
    )
    max_attempts: int = _setting(
        "PUSHGW_MAX_ATTEMPTS", _positive_int, 8, "delivery attempts before dead-lettering"
    )
    retry_base_s: float = _setting(
        "PUSHGW_RETRY_BASE_S", _positive_float, 1.0, "first retry backoff (full jitter, doubling)"
    )
    retry_cap_s: float = _setting("PUSHGW_RETRY_CAP_S", _positive_float, 300.0, "longest retry backoff")
    max_age_s: int = _setting(
        "PUSHGW_MAX_AGE_S", _positive_int, 6 * 3600, "an event older than this is dead-lettered, not retried"
    )
    breaker_failures: int = _setting(
        "PUSHGW_BREAKER_FAILURES", _positive_int, 20, "consecutive WeChat failures that open the circuit"
    )
    breaker_open_s: float = _setting(
        "PUSHGW_BREAKER_OPEN_S", _positive_float, 15.0, "how long the circuit stays open before a probe"
    )
    shutdown_timeout_s: float = _setting(
        "PUSHGW_SHUTDOWN_TIMEOUT_S", _positive_float, 20.0, "graceful shutdown deadline"
    )
    metrics_port: int = _setting(
        "PUSHGW_METRICS_PORT", _non_negative_int, 9108, "worker/simulator /metrics and /healthz port (0: off)"
    )
    metrics_host: str = _setting(
        "PUSHGW_METRICS_HOST", str, "127.0.0.1", "address the worker/simulator /metrics listens on"
    )
    log_level: str = _setting(
        "PUSHGW_LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", "log level"
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Read every `PUSHGW_*` variable; `overrides` (already parsed, e.g. CLI flags) win.

        Raises ConfigError naming the variable and the bad value.
        """
        values: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            env = spec.metadata["env"]
            if spec.name in overrides and overrides[spec.name] is not None:
                values[spec.name] = overrides[spec.name]
            elif env in environ:
                values[spec.name] = parse_setting(spec.name, environ[env])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules; raises ConfigError."""
        if self.event_ttl_s < 86400:
            raise ConfigError("PUSHGW_EVENT_TTL_S must be >= 86400: dedup is promised for at least 24 h")
        if self.retry_cap_s < self.retry_base_s:
            raise ConfigError("PUSHGW_RETRY_CAP_S must be >= PUSHGW_RETRY_BASE_S")

    def __repr__(self) -> str:
        shown = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"]:
                value = "***" if not isinstance(value, dict) else {k: "***" for k in value}
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def parse_setting(name: str, raw: str) -> Any:
    """Parse one raw string for the field `name`; raises ConfigError naming the variable (never the value
    of a secret)."""
    spec = next(f for f in dataclasses.fields(Settings) if f.name == name)
    try:
        return spec.metadata["parse"](raw)
    except ValueError as exc:
        shown = "***" if spec.metadata["secret"] else repr(raw)
        raise ConfigError(f"{spec.metadata['env']}={shown}: {exc}") from None


def setting_specs() -> list[dataclasses.Field[Any]]:
    """The fields with their env variable, parser and help, for the CLI and the README table."""
    return list(dataclasses.fields(Settings))
