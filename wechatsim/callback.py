"""Delivery-finished events: TEMPLATESENDJOBFINISH XML posted to the account's server URL (WECHAT_API.md s.4).

Configured by `PUSHGW_SIM_CALLBACK_URL` / `PUSHGW_SIM_CALLBACK_TOKEN` / `PUSHGW_SIM_ENCODING_AES_KEY`, or at
run time by the `callback` section of `PUT /sim/faults` (every key optional; unknown keys are refused):

    {"url": "http://127.0.0.1:8080/wechat/callback", "token": "...",
     "encoding_aes_key": "...",     # 43 characters: post in safe mode (WECHAT_API.md s.5)
     "user_block_rate": 0.0,        # share of "failed:user block"
     "system_failed_rate": 0.0,     # share of "failed: system failed"
     "duplicate_rate": 0.0,         # probability that an event is posted twice
     "timeout_s": 5.0,              # an answer later than this counts as not received
     "retry_delay_ms": 500}         # wait between tries (3 tries in all, as WeChat)

Each request carries `signature/timestamp/nonce` with `signature = sha1("".join(sorted([token, timestamp,
nonce])))`. With an EncodingAESKey it is a safe-mode post, as WeChat sends one: the query adds
`encrypt_type=aes&msg_signature=` (sha1 of token, timestamp, nonce and Encrypt, sorted) and the body is
`<xml><ToUserName/><Encrypt/></xml>`, Encrypt being `base64(AES-256-CBC(key=AESKey,
iv=AESKey[:16])(random16 + len(msg) as 4 bytes big-endian + msg + appid, PKCS#7-padded to 32 bytes))`.
A try succeeds when the answer is HTTP 200 with a body of `success` or nothing. The status and the double
are drawn when the message is delivered (from the faults' seed), so a seed replays them. Posting runs in a
fixed set of tasks owned by the app (`CallbackPoster.run`), never fire-and-forget.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import secrets
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "CallbackConfig",
    "CallbackError",
    "CallbackPoster",
    "CallbackStats",
    "FinishEvent",
    "aes_key",
    "finish_xml",
    "parse_callback",
    "safe_mode_post",
    "signature",
]

logger = logging.getLogger(__name__)

TRIES = 3
QUEUE_LIMIT = 100_000
SUCCESS, USER_BLOCK, SYSTEM_FAILED = "success", "failed:user block", "failed: system failed"
_KEYS = frozenset(
    {
        "url",
        "token",
        "encoding_aes_key",
        "user_block_rate",
        "system_failed_rate",
        "duplicate_rate",
        "timeout_s",
        "retry_delay_ms",
    }
)
PAD_BLOCK_BYTES = 32  # safe mode pads to 32 bytes, not to the AES block of 16


class CallbackError(ValueError):
    """A callback configuration is malformed; the message names the field."""


@dataclass(frozen=True, slots=True)
class CallbackConfig:
    """Where and how finish events are posted; no `url` means none are."""

    url: str | None = None
    token: str = field(default="", repr=False)
    encoding_aes_key: str = field(default="", repr=False)  # set: safe-mode posts
    user_block_rate: float = 0.0
    system_failed_rate: float = 0.0
    duplicate_rate: float = 0.0
    timeout_s: float = 5.0
    retry_delay_ms: float = 500.0

    def to_json(self) -> dict[str, object]:
        """The config as `GET /sim/faults` shows it (the token only as whether one is set)."""
        return {
            "url": self.url,
            "token_set": bool(self.token),
            "safe_mode": bool(self.encoding_aes_key),
            "user_block_rate": self.user_block_rate,
            "system_failed_rate": self.system_failed_rate,
            "duplicate_rate": self.duplicate_rate,
            "timeout_s": self.timeout_s,
            "retry_delay_ms": self.retry_delay_ms,
        }

    def status_for(self, roll: float) -> str:
        """The finish status for a uniform draw in [0, 1)."""
        if roll < self.user_block_rate:
            return USER_BLOCK
        if roll < self.user_block_rate + self.system_failed_rate:
            return SYSTEM_FAILED
        return SUCCESS


def _rate(raw: object, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
        raise CallbackError(f"callback.{name} must be a number in [0, 1], got {raw!r}")
    return float(raw)


def _positive(raw: object, name: str, high: float) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= high:
        raise CallbackError(f"callback.{name} must be a number in [0, {high:g}], got {raw!r}")
    return float(raw)


def _text(raw: object, name: str) -> str:
    if not isinstance(raw, str):
        raise CallbackError(f"callback.{name} must be a string, got {raw!r}")
    return raw


def aes_key(encoding_aes_key: str) -> bytes:
    """The 32-byte AESKey of a 43-character EncodingAESKey (`base64_decode(key + "=")`); else ValueError."""
    if len(encoding_aes_key) != 43 or not encoding_aes_key.isascii():
        raise ValueError("an EncodingAESKey must be 43 characters of base64")
    try:
        key = base64.b64decode(encoding_aes_key + "=", validate=True)
    except binascii.Error:
        raise ValueError("an EncodingAESKey must be 43 characters of base64") from None
    if len(key) != 32:
        raise ValueError("an EncodingAESKey must decode to 32 bytes")
    return key


def _encoding_aes_key(raw: object) -> str:
    key = _text(raw, "encoding_aes_key")
    if key:
        try:
            aes_key(key)
        except ValueError:
            raise CallbackError("callback.encoding_aes_key must be 43 characters of base64") from None
    return key


def parse_callback(raw: object) -> CallbackConfig:
    """A CallbackConfig from decoded JSON; raises CallbackError naming the first bad field."""
    if not isinstance(raw, Mapping):
        raise CallbackError("callback must be a JSON object")
    unknown = set(raw) - _KEYS
    if unknown:
        raise CallbackError(f"callback: unknown key {sorted(unknown)[0]!r}")
    url = raw.get("url")
    if url is not None and not _text(url, "url").startswith(("http://", "https://")):
        raise CallbackError(f"callback.url must be an http(s) URL, got {url!r}")
    config = CallbackConfig(
        url=url or None,
        token=_text(raw.get("token", ""), "token"),
        encoding_aes_key=_encoding_aes_key(raw.get("encoding_aes_key", "")),
        user_block_rate=_rate(raw.get("user_block_rate", 0), "user_block_rate"),
        system_failed_rate=_rate(raw.get("system_failed_rate", 0), "system_failed_rate"),
        duplicate_rate=_rate(raw.get("duplicate_rate", 0), "duplicate_rate"),
        timeout_s=_positive(raw.get("timeout_s", 5.0), "timeout_s", 60.0),
        retry_delay_ms=_positive(raw.get("retry_delay_ms", 500), "retry_delay_ms", 60_000.0),
    )
    if config.user_block_rate + config.system_failed_rate > 1.0 + 1e-9:
        raise CallbackError("callback.user_block_rate and system_failed_rate must sum to at most 1")
    return config


def signature(token: str, timestamp: str, nonce: str) -> str:
    """WeChat's server-URL signature: hex sha1 of the three strings sorted and joined."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()  # noqa: S324


def _seal(key: bytes, message: bytes, appid: str) -> str:
    """The Encrypt text of a safe-mode post: the message and appid, padded, encrypted, base64."""
    plain = secrets.token_bytes(16) + len(message).to_bytes(4, "big") + message + appid.encode()
    pad = PAD_BLOCK_BYTES - len(plain) % PAD_BLOCK_BYTES
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    sealed = encryptor.update(plain + bytes([pad]) * pad) + encryptor.finalize()
    return base64.b64encode(sealed).decode()


def safe_mode_post(
    config: CallbackConfig, appid: str, message: bytes, timestamp: str, nonce: str
) -> tuple[dict[str, str], bytes]:
    """The query and body of a safe-mode post of `message` (config.encoding_aes_key must be set)."""
    encrypt = _seal(aes_key(config.encoding_aes_key), message, appid)
    params = {
        "signature": signature(config.token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": hashlib.sha1(  # noqa: S324 - WeChat's scheme is SHA1
            "".join(sorted([config.token, timestamp, nonce, encrypt])).encode()
        ).hexdigest(),
    }
    body = (
        f"<xml><ToUserName><![CDATA[{account_id(appid)}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    ).encode()
    return params, body


def account_id(appid: str) -> str:
    """The account's original id (`ToUserName`), `gh_` and 12 hex digits derived from the appid."""
    return "gh_" + hashlib.sha256(appid.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class FinishEvent:
    """One event to post: where, with which token and settings, and what it says."""

    config: CallbackConfig
    appid: str
    touser: str
    msgid: int
    status: str
    create_time: int
    duplicate: bool = False


def finish_xml(event: FinishEvent) -> bytes:
    """The TEMPLATESENDJOBFINISH XML of WECHAT_API.md s.4 (openids hold no CDATA terminator)."""
    return (
        f"<xml><ToUserName><![CDATA[{account_id(event.appid)}]]></ToUserName>"
        f"<FromUserName><![CDATA[{event.touser}]]></FromUserName>"
        f"<CreateTime>{event.create_time}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        f"<MsgID>{event.msgid}</MsgID><Status><![CDATA[{event.status}]]></Status></xml>"
    ).encode()


@dataclass(slots=True)
class CallbackStats:
    """Finish events queued (by status), doubles, tries, acknowledged, given up, dropped (queue full).

    `log` keeps one entry per posted event for the inspection API, in the order they finished.
    """

    queued: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    tries: int = 0
    acknowledged: int = 0
    given_up: int = 0
    dropped: int = 0
    log: list[dict[str, object]] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "queued": dict(self.queued),
            "duplicates": self.duplicates,
            "tries": self.tries,
            "acknowledged": self.acknowledged,
            "given_up": self.given_up,
            "dropped": self.dropped,
        }


Clock = Callable[[], float]


class CallbackPoster:
    """A queue of finish events and the tasks that post them; `run` is owned by the app's cleanup_ctx."""

    def __init__(self, clock: Clock, stats: Callable[[], CallbackStats], workers: int = 16) -> None:
        self._clock = clock
        self._stats = stats
        self._workers = workers
        self._queue: asyncio.Queue[FinishEvent] = asyncio.Queue(QUEUE_LIMIT)

    def enqueue(self, event: FinishEvent) -> None:
        """Queue an event to post (dropped and counted when the queue is full)."""
        stats = self._stats()
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            stats.dropped += 1
            return
        if event.duplicate:
            stats.duplicates += 1
        else:
            stats.queued[event.status] += 1

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Post queued events until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(self._workers):
                group.create_task(self._work(session), name=f"wechatsim-callback-{index}")

    async def _work(self, session: aiohttp.ClientSession) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._post(session, event)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the poster
                logger.exception("posting a finish event failed")
            finally:
                self._queue.task_done()

    async def _post(self, session: aiohttp.ClientSession, event: FinishEvent) -> None:
        config, body = event.config, finish_xml(event)
        for attempt in range(1, TRIES + 1):
            self._stats().tries += 1
            if await self._try(session, config, event.appid, body):
                self._record(event, attempt, acknowledged=True)
                return
            if attempt < TRIES and config.retry_delay_ms:
                await asyncio.sleep(config.retry_delay_ms / 1000)
        self._record(event, TRIES, acknowledged=False)

    async def _try(
        self, session: aiohttp.ClientSession, config: CallbackConfig, appid: str, message: bytes
    ) -> bool:
        """One post, signed (and in safe mode sealed) afresh: each try has its own timestamp and nonce."""
        timestamp, nonce = str(int(self._clock())), secrets.token_hex(8)
        if config.encoding_aes_key:
            params, body = safe_mode_post(config, appid, message, timestamp, nonce)
        else:
            params = {
                "signature": signature(config.token, timestamp, nonce),
                "timestamp": timestamp,
                "nonce": nonce,
            }
            body = message
        timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        assert config.url is not None  # noqa: S101 - only events with a url are queued
        try:
            async with session.post(
                config.url, params=params, data=body, headers={"Content-Type": "text/xml"}, timeout=timeout
            ) as resp:
                answer = (await resp.read()).strip()
                return resp.status == 200 and answer in (b"", b"success")
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _record(self, event: FinishEvent, tries: int, *, acknowledged: bool) -> None:
        stats = self._stats()
        if acknowledged:
            stats.acknowledged += 1
        else:
            stats.given_up += 1
        stats.log.append(
            {
                "msgid": event.msgid,
                "touser": event.touser,
                "status": event.status,
                "duplicate": event.duplicate,
                "tries": tries,
                "acknowledged": acknowledged,
            }
        )

    async def drain(self) -> None:
        """Wait until every queued event has been posted (or given up)."""
        await self._queue.join()
