"""The simulator's in-memory state: tokens, followers, deliveries, client_msg_id dedup, quotas and stats."""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from wechatsim import errcodes
from wechatsim.callback import CallbackConfig, CallbackPoster, CallbackStats, FinishEvent
from wechatsim.catalog import Template, load_templates
from wechatsim.config import SimConfig
from wechatsim.faults import FaultConfig, FaultInjector

__all__ = [
    "AppStats",
    "Clock",
    "DedupIndex",
    "DeliveredMessage",
    "QuotaCounter",
    "SimState",
    "Stats",
    "Token",
    "TokenKind",
    "TokenState",
    "TokenStore",
]

Clock = Callable[[], float]
"""Unix time in seconds; injected so tests can move time."""

FIRST_MSGID = 3717005636572528642
_BEIJING_OFFSET_S = 8 * 3600
FORCE_REFRESH_PER_DAY = 20
FORCE_REFRESH_SPACING_S = 30.0


class TokenKind(StrEnum):
    PLAIN = "token"
    STABLE = "stable_token"


class TokenState(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class Token:
    value: str
    appid: str
    kind: TokenKind
    expires_at_s: float


class TokenStore:
    """Issues and checks access tokens; `/cgi-bin/token` and `/cgi-bin/stable_token` tokens are separate."""

    def __init__(self, ttl_s: float, overlap_s: float) -> None:
        self._ttl_s = ttl_s
        self._overlap_s = overlap_s
        self._tokens: dict[str, Token] = {}
        self._current: dict[tuple[str, TokenKind], Token] = {}
        self._forced: dict[str, tuple[int, int, float]] = {}  # appid -> (Beijing day, count, last at)

    def force_refresh_errcode(self, appid: str, now_s: float) -> int | None:
        """Take one stable_token `force_refresh` of the day, or answer why not (counting nothing).

        WeChat allows 20 a day, at least 30 s apart: past 20 -> 45009 (daily quota), sooner -> 45011
        (frequency; "retry next minute").
        """
        day = int((now_s + _BEIJING_OFFSET_S) // 86400)
        used_day, count, last_s = self._forced.get(appid, (day, 0, -math.inf))
        if used_day != day:
            count = 0
        if count >= FORCE_REFRESH_PER_DAY:
            return errcodes.DAILY_QUOTA
        if now_s - last_s < FORCE_REFRESH_SPACING_S:
            return errcodes.MINUTE_QUOTA
        self._forced[appid] = (day, count + 1, now_s)
        return None

    def _new(self, appid: str, kind: TokenKind, now_s: float) -> Token:
        self._tokens = {v: t for v, t in self._tokens.items() if t.expires_at_s > now_s - self._ttl_s}
        token = Token(secrets.token_urlsafe(102), appid, kind, now_s + self._ttl_s)
        self._tokens[token.value] = token
        self._current[(appid, kind)] = token
        return token

    def _shorten(self, token: Token | None, now_s: float) -> None:
        if token is not None:
            token.expires_at_s = min(token.expires_at_s, now_s + self._overlap_s)

    def issue(self, appid: str, now_s: float) -> Token:
        """A new `/cgi-bin/token` token; the previous one stays valid `overlap_s` more."""
        self._shorten(self._current.get((appid, TokenKind.PLAIN)), now_s)
        return self._new(appid, TokenKind.PLAIN, now_s)

    def stable(self, appid: str, now_s: float, force_refresh: bool) -> Token:
        """The stable token: the same one while more than `overlap_s` is left, else a new one.

        A renewal leaves the old token valid to its expiry; `force_refresh` cuts it to `overlap_s`.
        """
        current = self._current.get((appid, TokenKind.STABLE))
        if force_refresh:
            self._shorten(current, now_s)
        elif current is not None and current.expires_at_s - now_s >= self._overlap_s:
            return current
        return self._new(appid, TokenKind.STABLE, now_s)

    def check(self, value: str, now_s: float) -> tuple[TokenState, str | None]:
        """Whether `value` is valid, expired or unknown, and the appid it belongs to."""
        token = self._tokens.get(value)
        if token is None:
            return TokenState.UNKNOWN, None
        if now_s >= token.expires_at_s:
            return TokenState.EXPIRED, token.appid
        return TokenState.VALID, token.appid

    def expire_app(self, appid: str, now_s: float) -> int:
        """Expire every token of `appid` now (later checks answer expired); returns how many were live."""
        live = [t for t in self._tokens.values() if t.appid == appid and t.expires_at_s > now_s]
        for token in live:
            token.expires_at_s = now_s
        for kind in TokenKind:
            self._current.pop((appid, kind), None)
        return len(live)

    def clear(self) -> None:
        self._tokens.clear()
        self._current.clear()
        self._forced.clear()


DedupKey = tuple[str, str, str]
"""(appid, touser, client_msg_id)."""


class DedupIndex:
    """The first msgid per `touser + client_msg_id` within a window of seconds."""

    def __init__(self, window_s: float) -> None:
        self._window_s = window_s
        self._seen: OrderedDict[DedupKey, tuple[int, float]] = OrderedDict()

    def _prune(self, now_s: float) -> None:
        while self._seen:
            key, (_, at_s) = next(iter(self._seen.items()))
            if now_s - at_s < self._window_s:
                return
            del self._seen[key]

    def first_msgid(self, key: DedupKey, now_s: float) -> int | None:
        self._prune(now_s)
        entry = self._seen.get(key)
        return None if entry is None else entry[0]

    def remember(self, key: DedupKey, msgid: int, now_s: float) -> None:
        self._seen.pop(key, None)
        self._seen[key] = (msgid, now_s)

    def clear(self) -> None:
        self._seen.clear()


@dataclass(slots=True)
class _AppUsage:
    day: int = -1
    day_count: int = 0
    minute: int = -1
    minute_count: int = 0
    second: int = -1
    second_count: int = 0


class QuotaCounter:
    """Template sends per app per Beijing day and per minute."""

    def __init__(self) -> None:
        self._usage: dict[str, _AppUsage] = {}

    def take(self, appid: str, now_s: float, daily_quota: int, minute_quota: int, qps: int = 0) -> int | None:
        """Count one send, or return 45009 / 45011 (counting nothing) when a quota is used up.

        `minute_quota` and `qps` (sends per whole second, per app) 0 mean unlimited; past `qps` the
        answer is 45011 too, WeChat's frequency errcode.
        """
        usage = self._usage.setdefault(appid, _AppUsage())
        day, minute, second = int((now_s + _BEIJING_OFFSET_S) // 86400), int(now_s // 60), int(now_s)
        if usage.day != day:
            usage.day, usage.day_count = day, 0
        if usage.minute != minute:
            usage.minute, usage.minute_count = minute, 0
        if usage.second != second:
            usage.second, usage.second_count = second, 0
        if usage.day_count >= daily_quota:
            return errcodes.DAILY_QUOTA
        if minute_quota and usage.minute_count >= minute_quota:
            return errcodes.MINUTE_QUOTA
        if qps and usage.second_count >= qps:
            return errcodes.MINUTE_QUOTA
        usage.day_count += 1
        usage.minute_count += 1
        usage.second_count += 1
        return None

    def clear(self) -> None:
        self._usage.clear()


@dataclass(frozen=True, slots=True)
class DeliveredMessage:
    """What reached a user; `appid` (the sending account) filters `/sim/messages` and is not in the JSON."""

    touser: str
    template_id: str
    client_msg_id: str | None
    msgid: int
    data: dict[str, object]
    url: str | None
    received_at: float
    appid: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "touser": self.touser,
            "template_id": self.template_id,
            "client_msg_id": self.client_msg_id,
            "msgid": self.msgid,
            "data": self.data,
            "url": self.url,
            "received_at": self.received_at,
        }


@dataclass(slots=True)
class AppStats:
    """One app's template sends (with a valid token): answers by errcode, deliveries, dedup hits."""

    sends: int = 0
    delivered: int = 0
    deduplicated: int = 0
    errcodes: Counter[str] = field(default_factory=Counter)

    def to_json(self) -> dict[str, object]:
        return {
            "sends": self.sends,
            "delivered": self.delivered,
            "deduplicated": self.deduplicated,
            "errcodes": dict(self.errcodes),
        }


@dataclass(slots=True)
class Stats:
    """Calls per endpoint, deliveries, dedup hits, and answers by errcode (or `http_5xx`, `reset`).

    `errcodes` counts template-send answers; `token_errcodes` those of the two token endpoints; `apps`
    the sends of each app; `callbacks` the finish events posted.
    """

    calls: Counter[str] = field(default_factory=Counter)
    delivered: int = 0
    deduplicated: int = 0
    errcodes: Counter[str] = field(default_factory=Counter)
    token_errcodes: Counter[str] = field(default_factory=Counter)
    apps: dict[str, AppStats] = field(default_factory=dict)
    callbacks: CallbackStats = field(default_factory=CallbackStats)

    def app(self, appid: str) -> AppStats:
        found = self.apps.get(appid)
        if found is None:
            found = self.apps[appid] = AppStats()
        return found

    def to_json(self) -> dict[str, object]:
        calls = {"token": 0, "stable_token": 0, "send": 0, "templates": 0} | dict(self.calls)
        return {
            "calls": calls,
            "delivered": self.delivered,
            "deduplicated": self.deduplicated,
            "errcodes": dict(self.errcodes),
            "token_errcodes": dict(self.token_errcodes),
            "apps": {appid: app.to_json() for appid, app in sorted(self.apps.items())},
            "callbacks": self.callbacks.to_json(),
        }


class SimState:
    """Everything the simulator remembers; `reset()` keeps only the apps and templates.

    Each app knows the shipped templates unless it has its own (`SimConfig.templates`, `POST /sim/templates`):
    WeChat template ids belong to one account. Faults are global unless an app has its own set
    (`PUT /sim/faults?appid=`), which replaces the global set for that app's calls.
    """

    def __init__(self, config: SimConfig, clock: Clock = time.time) -> None:
        self.config = config
        self.clock = clock
        self.templates: dict[str, Template] = load_templates()
        self.tokens = TokenStore(config.token_ttl_s, config.token_overlap_s)
        self.dedup = DedupIndex(config.dedup_window_s)
        self.quotas = QuotaCounter()
        self.faults = FaultInjector(config.seed, clock)
        self.faults.set(config.faults)
        self.app_faults: dict[str, FaultInjector] = {}
        self.app_templates = {
            appid: {t.template_id: t for t in templates} for appid, templates in config.templates.items()
        }
        self.unsubscribed: set[str] = set()
        self.blocked: set[str] = set()
        self.openid_apps: dict[str, str] = {}
        self.messages: deque[DeliveredMessage] = deque(maxlen=config.keep_messages)
        self.stats = Stats()
        self.callbacks = CallbackPoster(clock, lambda: self.stats.callbacks)
        self._next_msgid = FIRST_MSGID

    def new_msgid(self) -> int:
        msgid = self._next_msgid
        self._next_msgid += 1
        return msgid

    def faults_for(self, appid: str | None) -> FaultInjector:
        """The faults in force for `appid`'s calls: its own set if it has one, else the global one."""
        return self.faults if appid is None else self.app_faults.get(appid, self.faults)

    def set_app_faults(self, appid: str, config: FaultConfig) -> FaultInjector:
        """Give `appid` its own fault set (random source seeded like the global one's)."""
        injector = FaultInjector(self.config.seed, self.clock)
        injector.set(config)
        self.app_faults[appid] = injector
        return injector

    def templates_of(self, appid: str) -> dict[str, Template]:
        """The templates `appid` may send: its own, else the shipped ones."""
        return self.app_templates.get(appid, self.templates)

    def daily_quota(self, appid: str | None = None) -> int:
        override = self.faults_for(appid).quota_overrides[0]
        return self.config.daily_quota if override is None else override

    def minute_quota(self, appid: str | None = None) -> int:
        override = self.faults_for(appid).quota_overrides[1]
        return self.config.minute_quota if override is None else override

    def qps(self, appid: str | None = None) -> int:
        override = self.faults_for(appid).qps_override
        return self.config.qps if override is None else override

    def callback(self, appid: str | None = None) -> CallbackConfig | None:
        """Where finish events go: the faults' callback section, else the configured one."""
        return self.faults_for(appid).callback or self.config.callback

    def openid_errcode(self, appid: str, openid: str) -> int | None:
        """40003 for an openid registered to another app; 43019 blacklisted; 43004 unsubscribed.

        An openid registered to no app follows every app (the default: every openid follows).
        """
        owner = self.openid_apps.get(openid)
        if owner is not None and owner != appid:
            return errcodes.INVALID_OPENID
        if openid in self.blocked:
            return errcodes.BLACKLISTED
        if openid in self.unsubscribed:
            return errcodes.REQUIRE_SUBSCRIBE
        return None

    def delivered(self, appid: str, message: DeliveredMessage) -> None:
        """A new message reached its user: keep it, and queue its finish event if a callback is set."""
        self.messages.append(message)
        self.stats.delivered += 1
        self.stats.app(appid).delivered += 1
        callback = self.callback(appid)
        if callback is None or callback.url is None:
            return
        rng = self.faults_for(appid).callback_rng
        status = callback.status_for(rng.random())
        twice = bool(callback.duplicate_rate) and rng.random() < callback.duplicate_rate
        event = FinishEvent(callback, appid, message.touser, message.msgid, status, int(message.received_at))
        self.callbacks.enqueue(event)
        if twice:
            self.callbacks.enqueue(replace(event, duplicate=True))

    def reset(self) -> None:
        """Forget messages, stats, dedup, quota use, faults, unsubscribes and tokens; msgids keep rising."""
        self.tokens.clear()
        self.dedup.clear()
        self.quotas.clear()
        self.faults.set(self.config.faults)
        self.app_faults.clear()
        self.unsubscribed.clear()
        self.blocked.clear()
        self.openid_apps.clear()
        self.messages.clear()
        self.stats = Stats()
