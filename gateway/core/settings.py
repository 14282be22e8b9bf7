"""One frozen Settings for every process, built once from `PUSHGW_*` variables or the matching CLI flags."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.core.critical import CriticalRules, parse_critical_rules
from gateway.core.event import EventType

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


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0:
        raise ValueError("must be >= 0")
    return value


def _http_url(raw: str) -> str:
    if not raw.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return raw.rstrip("/")


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


KEY_SCOPES = ("events", "bindings", "customers")


def _key_scopes(raw: str) -> dict[str, frozenset[str]]:
    scopes: dict[str, frozenset[str]] = {}
    for key_id, listed in _pairs("=")(raw).items():
        named = frozenset(part.strip() for part in listed.split("+"))
        if not named <= set(KEY_SCOPES):
            raise ValueError(f"each scope must be one of {', '.join(KEY_SCOPES)}, joined by +")
        scopes[key_id] = named
    return scopes


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


_APPID = re.compile(r"wx[A-Za-z0-9_]{1,62}")
TEMPLATE_KINDS = frozenset({*EventType, "digest"})  # what each account names a template id for


def _accounts(raw: str) -> dict[str, str]:
    accounts = _pairs(":")(raw)
    for appid in accounts:
        if not _APPID.fullmatch(appid):
            raise ValueError(f"appid {appid[:64]!r} must look like wx followed by letters and digits")
    return accounts


def _template_ids(raw: str) -> dict[str, dict[str, str]]:
    """A JSON file {appid: {event type or "digest": template_id}}; every account names every kind."""
    try:
        with open(raw, "rb") as file:
            loaded = json.load(file)
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(loaded, dict):
        raise ValueError("must hold an object of appid -> {event type or digest: template_id}")
    for appid, ids in loaded.items():
        if not isinstance(ids, dict) or not all(isinstance(v, str) and v for v in ids.values()):
            raise ValueError(f"{appid}: must map event types and digest to template ids")
        if set(ids) != TEMPLATE_KINDS:
            odd = sorted(set(ids) ^ TEMPLATE_KINDS)
            raise ValueError(f"{appid}: must name a template id for each event type and digest, not {odd}")
    return loaded


def _callback_urls(raw: str) -> dict[str, str]:
    urls = _pairs("=")(raw)
    for key_id, url in urls.items():
        if not url.startswith(("https://", "http://")):
            raise ValueError(f"the URL of {key_id[:64]!r} must start with https:// or http://")
    return urls


ENCODING_AES_KEY_CHARS = 43


def aes_key_of(encoding_aes_key: str) -> bytes:
    """The 32-byte AES key of a WeChat EncodingAESKey (43 characters of base64 without the trailing `=`,
    WECHAT_API.md s.5). Raises ValueError for anything else."""
    if len(encoding_aes_key) != ENCODING_AES_KEY_CHARS or not encoding_aes_key.isascii():
        raise ValueError(f"must be {ENCODING_AES_KEY_CHARS} characters of base64")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError(f"must be {ENCODING_AES_KEY_CHARS} characters of base64") from None
    if len(key) != 32:  # a 43-character string always decodes to 32 bytes; kept as the contract
        raise ValueError("must decode to a 32-byte AES key")
    return key


def _encoding_aes_key(raw: str) -> str:
    if raw:
        aes_key_of(raw)
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")):
        raise ValueError("must start with redis://, rediss://, unix:// or redis+cluster://")
    return raw


def _archive_url(raw: str) -> str:
    if raw and not raw.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with postgresql:// (or be empty: no archive)")
    return raw


def _epoch_id(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise ValueError("must be an epoch id as `pushgw epoch show` prints it (letters, digits, - and _)")
    return value


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
    redis_wait_replicas: int = _setting(
        "PUSHGW_REDIS_WAIT_REPLICAS",
        _non_negative_int,
        0,
        "replicas that must hold an ingest write before 202 (Redis WAIT, within half the Redis deadline;"
        " fewer -> 503); 0: no wait",
    )
    redis_epoch: str = _setting(
        "PUSHGW_REDIS_EPOCH",
        _epoch_id,
        "",
        "the data epoch this deployment's Redis must hold (`pushgw epoch init` prints it); a Redis without it"
        " or with another one is refused. Empty: the first epoch seen is kept, none is refused",
    )
    archive_url: str = _setting(
        "PUSHGW_ARCHIVE_URL",
        _archive_url,
        "",
        "PostgreSQL archive of every alert's final state, as postgresql://user:password@host:port/db (workers"
        " write it, lookups read it once Redis let a record expire); empty: no archive",
    )
    archive_retention_days: int = _setting(
        "PUSHGW_ARCHIVE_RETENTION_DAYS",
        _positive_int,
        1825,
        "archived months wholly older than this many days are dropped (daily, and `pushgw archive prune`)",
    )
    archive_batch: int = _setting(
        "PUSHGW_ARCHIVE_BATCH", _positive_int, 500, "most archive rows a worker writes in one transaction"
    )
    api_keys: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_API_KEYS", _pairs(":"), {}, "ingress keys as keyid:secret,keyid:secret", secret=True
    )
    api_key_scopes: dict[str, frozenset[str]] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_API_KEY_SCOPES",
        _key_scopes,
        {},
        "what each key may call, as keyid=events+bindings+customers,...; a key not listed may call all",
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
    max_ingest_waiting: int = _setting(
        "PUSHGW_MAX_INGEST_WAITING",
        _positive_int,
        512,
        "ingest requests one gateway process works on at once; more are refused early (503, Retry-After)",
    )
    body_timeout_s: float = _setting(
        "PUSHGW_BODY_TIMEOUT_S",
        _positive_float,
        5.0,
        "a request body must be complete this long after its headers; later: 408 and the connection closed",
    )
    header_timeout_s: float = _setting(
        "PUSHGW_HEADER_TIMEOUT_S",
        _positive_float,
        10.0,
        "a request's headers must be complete this long after their first byte, or the connection is closed",
    )
    idle_timeout_s: float = _setting(
        "PUSHGW_IDLE_TIMEOUT_S",
        _positive_float,
        75.0,
        "an ingress connection is closed when no complete request head came this long after it opened or"
        " after its last answer (keep-alive; keep it above a load balancer's idle timeout)",
    )
    max_connections: int = _setting(
        "PUSHGW_MAX_CONNECTIONS",
        _positive_int,
        10000,
        "open ingress connections per gateway process (at most the file limit allows); when full, the one"
        " stalled longest (idle, or its request incomplete) is closed for the new one",
    )
    tls_cert_file: str = _setting(
        "PUSHGW_TLS_CERT_FILE", str, "", "PEM certificate chain: the gateway serves HTTPS (empty: plain HTTP)"
    )
    tls_key_file: str = _setting("PUSHGW_TLS_KEY_FILE", str, "", "PEM private key of PUSHGW_TLS_CERT_FILE")
    tls_client_ca_file: str = _setting(
        "PUSHGW_TLS_CLIENT_CA_FILE",
        str,
        "",
        "PEM CA certificates: clients must present a certificate one of them signed (mutual TLS)",
    )
    rate_limit: RateLimit = _setting(  # noqa: RUF009 - RateLimit is frozen
        "PUSHGW_RATE_LIMIT", _rate_limit, RateLimit(5, 60), "per-customer limit: N messages per W seconds"
    )
    rate_policy: str = _setting(
        "PUSHGW_RATE_POLICY", _choice("digest", "reject"), "digest", "over the limit: digest or reject (429)"
    )
    critical_rules: CriticalRules = _setting(  # noqa: RUF009 - CriticalRules is frozen
        "PUSHGW_CRITICAL_RULES",
        parse_critical_rules,
        CriticalRules(),
        "what else makes an event critical: TYPE>=AMOUNT, *>=AMOUNT, channel=NAME (comma-separated)",
    )
    callback_urls: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_CALLBACK_URLS",
        _callback_urls,
        {},
        "status notices to core banking (SMS fallback) as keyid=url,keyid=url, signed with that key",
    )
    callback_previous_secrets: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_CALLBACK_PREVIOUS_SECRETS",
        _pairs(":"),
        {},
        "while a key's secret is rotated, its previous one as keyid:secret (notices carry both signatures)",
        secret=True,
    )
    callback_timeout_s: float = _setting(
        "PUSHGW_CALLBACK_TIMEOUT_S",
        _positive_float,
        10.0,
        "total timeout of one notice POST (keep it under PUSHGW_RECLAIM_IDLE_S)",
    )
    notice_concurrency: int = _setting(
        "PUSHGW_NOTICE_CONCURRENCY", _positive_int, 16, "notice POSTs in flight per worker process"
    )
    notice_max_attempts: int = _setting(
        "PUSHGW_NOTICE_MAX_ATTEMPTS", _positive_int, 20, "notice POST attempts before dead-lettering"
    )
    notice_max_age_s: int = _setting(
        "PUSHGW_NOTICE_MAX_AGE_S",
        _positive_int,
        86400,
        "a notice older than this (since its event's final state) is dead-lettered, not retried",
    )
    ingest_coalesce: bool = _setting(
        "PUSHGW_INGEST_COALESCE",
        _bool,
        True,
        "share Redis round trips between concurrent single-event requests (off: one round trip each)",
    )
    shards: int = _setting(
        "PUSHGW_SHARDS",
        _positive_int,
        1,
        "shards: delivery streams by customer, one cluster slot each (>= 4 x primaries; never lower it)",
    )
    wechat_base_url: str = _setting(
        "PUSHGW_WECHAT_BASE_URL", str, "https://api.weixin.qq.com", "WeChat API base URL"
    )
    wechat_appid: str = _setting("PUSHGW_WECHAT_APPID", str, "", "WeChat official account appid")
    wechat_secret: str = _setting(
        "PUSHGW_WECHAT_SECRET", str, "", "WeChat official account AppSecret", secret=True
    )
    wechat_accounts: dict[str, str] = _setting(  # noqa: RUF009 - a default_factory, see _setting
        "PUSHGW_WECHAT_ACCOUNTS",
        _accounts,
        {},
        "further official accounts as appid:secret,appid:secret (a binding names one by its appid)",
        secret=True,
    )
    wechat_templates: dict[str, dict[str, str]] = _setting(  # noqa: RUF009 - a default_factory
        "PUSHGW_WECHAT_TEMPLATES",
        _template_ids,
        {},
        "JSON file of each account's template ids {appid: {event type or digest: id}}; default account:"
        " the shipped ones",
    )
    wechat_max_sends_per_s: int = _setting(
        "PUSHGW_WECHAT_MAX_SENDS_PER_S",
        _non_negative_int,
        0,
        "global outbound limit: template sends a second per official account, all workers together (0: none)",
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
    wechat_encoding_aes_key: str = _setting(
        "PUSHGW_WECHAT_ENCODING_AES_KEY",
        _encoding_aes_key,
        "",
        "EncodingAESKey of WeChat's safe mode (43 characters); set: /wechat/callback takes only encrypted"
        " posts, checked against PUSHGW_WECHAT_APPID",
        secret=True,
    )
    token_refresh_margin_s: int = _setting(
        "PUSHGW_TOKEN_REFRESH_MARGIN_S",
        _positive_int,
        120,
        "refresh the access token this long before expiry (keep under WeChat's 300 s overlap)",
    )
    worker_concurrency: int = _setting(
        "PUSHGW_WORKER_CONCURRENCY", _positive_int, 256, "deliveries in flight per worker process"
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
    drain_grace_s: float = _setting(
        "PUSHGW_DRAIN_GRACE_S",
        _non_negative_float,
        5.0,
        "gateway drain (SIGTERM, SIGUSR1, POST /admin/drain on its metrics port): /readyz answers 503"
        " draining and requests are still served this long, then it stops",
    )
    metrics_port: int = _setting(
        "PUSHGW_METRICS_PORT",
        _non_negative_int,
        9108,
        "worker /metrics and /healthz port (0: off); the gateway's is PUSHGW_GATEWAY_METRICS_PORT, the"
        " simulator serves /metrics on its own port",
    )
    metrics_host: str = _setting(
        "PUSHGW_METRICS_HOST",
        str,
        "127.0.0.1",
        "address the worker's /metrics listens on (and the gateway's: PUSHGW_GATEWAY_METRICS_PORT)",
    )
    gateway_metrics_port: int = _setting(
        "PUSHGW_GATEWAY_METRICS_PORT",
        _non_negative_int,
        0,
        "gateway /metrics and /healthz on a listener of their own (the ingress port then answers 404 for"
        " /metrics); 0: /metrics on the ingress port",
    )
    gateway_url: str = _setting(
        "PUSHGW_GATEWAY_URL",
        _http_url,
        "http://127.0.0.1:8080",
        "the gateway the operator lookups ask (`pushgw events show`, `customers show`, `bindings import`)",
    )
    operator_key_id: str = _setting(
        "PUSHGW_OPERATOR_KEY_ID",
        str,
        "",
        "the key of PUSHGW_API_KEYS the operator lookups sign with (empty: the only key there; no keys:"
        " unsigned, for an open `pushgw dev`)",
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
        self._check_accounts()
        self._check_callbacks()
        self._check_tls()
        self._check_wechat_callback()
        self._check_keys()

    def _check_keys(self) -> None:
        """Key ids travel as signature parameters (quoted strings): keep them plain; scopes name real keys."""
        for key_id in self.api_keys:
            if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", key_id):
                raise ConfigError(f"PUSHGW_API_KEYS: key id {key_id[:64]!r} must be 1 to 64 of A-Za-z0-9._:-")
        for key_id in self.api_key_scopes:
            if key_id not in self.api_keys:
                raise ConfigError(
                    f"PUSHGW_API_KEY_SCOPES names key id {key_id}, which is not in PUSHGW_API_KEYS"
                )

    def _check_wechat_callback(self) -> None:
        """Safe mode signs with the callback token and checks the appid sealed in each message."""
        if not self.wechat_encoding_aes_key:
            return
        for needed, value in (
            ("PUSHGW_WECHAT_CALLBACK_TOKEN", self.wechat_callback_token),
            ("PUSHGW_WECHAT_APPID", self.wechat_appid),
        ):
            if not value:
                raise ConfigError(f"PUSHGW_WECHAT_ENCODING_AES_KEY needs {needed} (safe mode checks it)")

    def _check_tls(self) -> None:
        """A certificate needs its key, and client certificates can only be asked for over TLS."""
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("PUSHGW_TLS_CERT_FILE and PUSHGW_TLS_KEY_FILE are set together or not at all")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError("PUSHGW_TLS_CLIENT_CA_FILE needs PUSHGW_TLS_CERT_FILE and PUSHGW_TLS_KEY_FILE")

    def _check_callbacks(self) -> None:
        """A notice is signed with its source's API secret, so each callback needs that key."""
        for name, key_ids in (
            ("PUSHGW_CALLBACK_URLS", self.callback_urls),
            ("PUSHGW_CALLBACK_PREVIOUS_SECRETS", self.callback_previous_secrets),
        ):
            for key_id in key_ids:
                if key_id not in self.api_keys:
                    raise ConfigError(f"{name} names key id {key_id}, which has no secret in PUSHGW_API_KEYS")

    def _check_accounts(self) -> None:
        """Several accounts need a default one, and each further account its own template ids."""
        if self.wechat_accounts and not self.wechat_appid:
            raise ConfigError("PUSHGW_WECHAT_ACCOUNTS needs PUSHGW_WECHAT_APPID (the default account)")
        if self.wechat_appid in self.wechat_accounts:
            raise ConfigError("PUSHGW_WECHAT_ACCOUNTS repeats the default account PUSHGW_WECHAT_APPID")
        for appid in self.wechat_accounts:
            if appid not in self.wechat_templates:
                raise ConfigError(f"PUSHGW_WECHAT_TEMPLATES names no template ids for account {appid}")
        for appid in self.wechat_templates:
            if appid != self.wechat_appid and appid not in self.wechat_accounts:
                raise ConfigError(f"PUSHGW_WECHAT_TEMPLATES names {appid}, which is not a configured account")

    def wechat_appids(self) -> frozenset[str]:
        """Every configured account (empty when no default account is configured)."""
        return frozenset({self.wechat_appid, *self.wechat_accounts}) if self.wechat_appid else frozenset()

    def __repr__(self) -> str:
        shown = []
        for spec in dataclasses.fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"]:
                value = "***" if not isinstance(value, dict) else {k: "***" for k in value}
            elif isinstance(value, str):
                value = without_password(value)
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"


_URL_PASSWORD = re.compile(r"(://[^/@:]*:)[^/]*@")  # to the last @ of the host part, as urlparse


def without_password(value: str) -> str:
    """`value` with the password of a URL in it (`redis://:PASSWORD@host`, `postgresql://u:PASSWORD@h`)
    shown as `***`: a Redis or archive URL may be printed, its password never."""
    return _URL_PASSWORD.sub(r"\1***@", value)


def parse_setting(name: str, raw: str) -> Any:
    """Parse one raw string for the field `name`; raises ConfigError naming the variable (never the value
    of a secret)."""
    spec = next(f for f in dataclasses.fields(Settings) if f.name == name)
    try:
        return spec.metadata["parse"](raw)
    except ValueError as exc:
        shown = "***" if spec.metadata["secret"] else repr(without_password(raw))
        raise ConfigError(f"{spec.metadata['env']}={shown}: {exc}") from None


def setting_specs() -> list[dataclasses.Field[Any]]:
    """The fields with their env variable, parser and help, for the CLI and the README table."""
    return list(dataclasses.fields(Settings))
