"""The WeChat API client (one shared session, timeouts) and `classify`: what each answer means for delivery.

The classification table is WECHAT_API.md s.3.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from gateway.core import metrics

SEND_PATH = "/cgi-bin/message/template/send"
_JSON = CIMultiDictProxy(CIMultiDict({"Content-Type": "application/json"}))
_MAX_SEND_URLS = 64  # a few tokens per configured account: the cache is only cleared when it overflows


class Outcome(Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    REFRESH_TOKEN = "refresh_token"  # noqa: S105 - an outcome name, not a credential
    PERMANENT = "permanent"
    DEAD_LETTER = "dead_letter"


class Wait(Enum):
    """How long a retry must wait beyond the backoff, and whether the whole appid should pause."""

    BACKOFF = "backoff"
    NEXT_MINUTE = "next_minute"  # 45011: minute quota
    QUOTA_RESET = "quota_reset"  # 45009: daily quota, pause the appid until midnight
    SUSPEND = "suspend"  # 48001/48004/50002: no permission or banned, pause the appid and alert


@dataclass(frozen=True)
class Answer:
    """What one call produced: a WeChat errcode, or an HTTP status, or a transport failure."""

    errcode: int | None = None
    msgid: str | None = None
    http_status: int | None = None
    transport: str | None = None  # "timeout" | "connection" | "bad_response"

    @property
    def unclear(self) -> bool:
        """The send left but no clear answer came back (timeout, reset, 5xx, garbage): WeChat may have sent
        the message. A token failure is clear: nothing was sent."""
        if self.transport is not None:
            return not self.transport.startswith("token_")
        return self.http_status is not None and self.http_status >= 500

    @property
    def label(self) -> str:
        """Bounded metric label and last_error text (never the errmsg, which may echo input)."""
        if self.transport:
            return self.transport
        if self.errcode is None:
            return f"http_{self.http_status}"
        return str(self.errcode) if self.errcode in _KNOWN else "other"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    wait: Wait = Wait.BACKOFF
    binding_state: str | None = None  # new state of the customer's binding, for PERMANENT answers
    breaker_failure: bool = False  # counts towards opening the circuit
    spends_attempt: bool = True  # False for a quota refusal: nothing was sent, and the pause bounds retries


_TABLE: dict[int, Verdict] = {
    0: Verdict(Outcome.DELIVERED),
    -1: Verdict(Outcome.RETRY, breaker_failure=True),
    40001: Verdict(Outcome.REFRESH_TOKEN),
    40014: Verdict(Outcome.REFRESH_TOKEN),
    42001: Verdict(Outcome.REFRESH_TOKEN),
    41001: Verdict(Outcome.DEAD_LETTER),
    40003: Verdict(Outcome.PERMANENT, binding_state="invalid"),
    43004: Verdict(Outcome.PERMANENT, binding_state="unsubscribed"),
    43019: Verdict(Outcome.PERMANENT, binding_state="blocked"),
    40036: Verdict(Outcome.DEAD_LETTER),
    40037: Verdict(Outcome.DEAD_LETTER),
    47003: Verdict(Outcome.DEAD_LETTER),
    47001: Verdict(Outcome.DEAD_LETTER),
    44002: Verdict(Outcome.DEAD_LETTER),
    45009: Verdict(Outcome.RETRY, wait=Wait.QUOTA_RESET, spends_attempt=False),
    45011: Verdict(Outcome.RETRY, wait=Wait.NEXT_MINUTE, spends_attempt=False),
    48001: Verdict(Outcome.RETRY, wait=Wait.SUSPEND),
    48004: Verdict(Outcome.RETRY, wait=Wait.SUSPEND),
    50002: Verdict(Outcome.RETRY, wait=Wait.SUSPEND),
}
_KNOWN = frozenset(_TABLE)
_UNKNOWN = Verdict(Outcome.RETRY)
_TRANSPORT = Verdict(Outcome.RETRY, breaker_failure=True)


def classify(answer: Answer) -> Verdict:
    """Pure: the delivery decision for one answer. Transport failures and 5xx are retried and count
    against the circuit; an errcode outside the table is retried (and dead-lettered at max attempts)."""
    if answer.transport is not None or (answer.http_status is not None and answer.http_status >= 500):
        return _TRANSPORT
    if answer.errcode is None:
        return _UNKNOWN
    return _TABLE.get(answer.errcode, _UNKNOWN)


class TokenError(Exception):
    """No access token could be had (WeChat refused or was unreachable); the delivery is retried.

    `answer` is what the token endpoint said. Its errcodes are not the send API's (a 45009 there is the
    force-refresh quota, not the send quota), so a delivery reads it as `send_answer`: a transport failure."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(f"access token unavailable: {answer.label}")
        self.answer = answer

    @property
    def send_answer(self) -> Answer:
        return Answer(transport=f"token_{self.answer.label}")


@dataclass(frozen=True)
class IssuedToken:
    token: str
    expires_in_s: int


class WeChatClient:
    """Calls of the Official Account API over one pooled session. Never logs tokens or bodies."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, timeout_s: float) -> None:
        self._session = session
        self._base_url = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._durations = {
            api: metrics.WECHAT_DURATION.labels(api) for api in ("stable_token", "template_send")
        }
        self._send_base = URL(self._base_url + SEND_PATH)
        # token -> send URL, built once per token rather than by aiohttp from `params=` on every call
        self._send_urls: dict[str, URL] = {}

    async def stable_token(self, appid: str, secret: str, *, force_refresh: bool = False) -> IssuedToken:
        """POST /cgi-bin/stable_token. Raises TokenError."""
        body = {
            "grant_type": "client_credential",
            "appid": appid,
            "secret": secret,
            "force_refresh": force_refresh,
        }
        answer, data = await self._call("stable_token", self._base_url + "/cgi-bin/stable_token", body)
        token = data.get("access_token")
        if not isinstance(token, str) or not token or not isinstance(data.get("expires_in"), int):
            unusable = answer.http_status == 200 and not answer.errcode  # a 200 without a token or an error
            raise TokenError(Answer(transport="bad_response") if unusable else answer)
        return IssuedToken(token, data["expires_in"])

    async def send_template(self, token: str, message: dict[str, Any]) -> Answer:
        """POST /cgi-bin/message/template/send; every failure comes back as an Answer, never raised."""
        url = self._send_urls.get(token)
        if url is None:
            if len(self._send_urls) >= _MAX_SEND_URLS:
                self._send_urls.clear()
            url = self._send_urls[token] = self._send_base.with_query(access_token=token)
        answer, _ = await self._call("template_send", url, message)
        if answer.http_status == 200 and answer.errcode is None:  # WeChat always says errcode, 0 included
            return Answer(transport="bad_response")
        return answer

    async def _call(self, api: str, url: str | URL, body: dict[str, Any]) -> tuple[Answer, dict[str, Any]]:
        started = time.perf_counter()
        try:
            async with self._session.post(
                url, data=orjson.dumps(body), headers=_JSON, timeout=self._timeout
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            return Answer(transport="timeout"), {}
        except (aiohttp.ClientError, OSError, asyncio.IncompleteReadError):
            return Answer(transport="connection"), {}
        finally:
            self._durations[api].observe(time.perf_counter() - started)
        if status != 200:
            return Answer(http_status=status), {}
        return _parse(raw)


def _parse(raw: bytes) -> tuple[Answer, dict[str, Any]]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return Answer(transport="bad_response"), {}
    if not isinstance(data, dict):
        return Answer(transport="bad_response"), {}
    errcode = data.get("errcode")  # absent on a token's success; never taken to mean 0
    msgid = data.get("msgid")
    return Answer(
        errcode=errcode if isinstance(errcode, int) else None,
        msgid=str(msgid) if msgid is not None else None,
        http_status=200,
    ), data
