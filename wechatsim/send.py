"""The template-send pipeline: checks in WeChat's order, then faults, quotas, dedup and delivery."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

import orjson

from wechatsim import errcodes
from wechatsim.rules import check_data
from wechatsim.state import DeliveredMessage, SimState, TokenState

__all__ = ["Answer", "send_template", "token_errcode"]

_OPENID_RE = re.compile(r"^[A-Za-z0-9_-]{6,64}$")


@dataclass(frozen=True, slots=True)
class Answer:
    """A JSON body (None for a bare 5xx), its HTTP status and how long to wait before answering."""

    body: dict[str, object] | None
    http_status: int = 200
    delay_s: float = 0.0
    reset: bool = False
    appid: str | None = None

    @property
    def errcode_label(self) -> str:
        """The stats key: the errcode as a string, `http_5xx`, or `reset` (connection closed unanswered)."""
        if self.reset:
            return "reset"
        if self.http_status >= 500 or self.body is None:
            return "http_5xx"
        return str(self.body.get("errcode", 0))


class _Reject(Exception):
    """Ends the pipeline with an errcode answer."""

    def __init__(self, errcode: int, errmsg: str | None = None) -> None:
        super().__init__(errcode)
        self.errcode = errcode
        self.errmsg = errmsg


def token_errcode(state: SimState, token: str | None) -> int | None:
    """41001 for no token, 42001 for an expired one, 40001 for an unknown one; None when valid."""
    if not token:
        return errcodes.ACCESS_TOKEN_MISSING
    token_state, _ = state.tokens.check(token, state.clock())
    if token_state is TokenState.EXPIRED:
        return errcodes.ACCESS_TOKEN_EXPIRED
    if token_state is TokenState.UNKNOWN:
        return errcodes.INVALID_CREDENTIAL
    return None


def _appid_for(state: SimState, token: str | None) -> str:
    errcode = token_errcode(state, token)
    if errcode is not None:
        raise _Reject(errcode)
    _, appid = state.tokens.check(token or "", state.clock())
    if appid is None:
        raise _Reject(errcodes.INVALID_CREDENTIAL)
    return appid


def _payload(body: bytes) -> Mapping[str, object]:
    try:
        payload = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        raise _Reject(errcodes.DATA_FORMAT) from None
    if not isinstance(payload, dict):
        raise _Reject(errcodes.DATA_FORMAT)
    return payload


def _optional_str(payload: Mapping[str, object], name: str) -> str | None:
    value = payload.get(name)
    if value is not None and not isinstance(value, str):
        raise _Reject(errcodes.DATA_FORMAT)
    return value


def _validate(state: SimState, appid: str, payload: Mapping[str, object]) -> DeliveredMessage:
    touser, template_id, data = payload.get("touser"), payload.get("template_id"), payload.get("data")
    url, client_msg_id = _optional_str(payload, "url"), _optional_str(payload, "client_msg_id")
    if not isinstance(touser, str) or not isinstance(template_id, str) or not isinstance(data, dict):
        raise _Reject(errcodes.DATA_FORMAT)
    template = state.templates_of(appid).get(template_id)
    if template is None:  # another account's template id is unknown to this one
        raise _Reject(errcodes.INVALID_TEMPLATE_ID)
    if _OPENID_RE.match(touser) is None:
        raise _Reject(errcodes.INVALID_OPENID)
    follower_errcode = state.openid_errcode(appid, touser)
    if follower_errcode is not None:
        raise _Reject(follower_errcode)
    problem = check_data(template.keys, data)
    if problem is not None:
        raise _Reject(errcodes.ARGUMENT_INVALID, problem)
    return DeliveredMessage(touser, template_id, client_msg_id or None, 0, data, url, 0.0, appid)


def _accept(state: SimState, appid: str, message: DeliveredMessage) -> int:
    """Quotas, then dedup, then delivery; returns the msgid to answer."""
    now_s = state.clock()
    quotas = state.daily_quota(appid), state.minute_quota(appid), state.qps(appid)
    over_quota = state.quotas.take(appid, now_s, *quotas)
    if over_quota is not None:
        raise _Reject(over_quota)
    key = None if message.client_msg_id is None else (appid, message.touser, message.client_msg_id)
    if key is not None:
        first = state.dedup.first_msgid(key, now_s)
        if first is not None:
            state.stats.deduplicated += 1
            state.stats.app(appid).deduplicated += 1
            return first
    msgid = state.new_msgid()
    if key is not None:
        state.dedup.remember(key, msgid, now_s)
    state.delivered(appid, replace(message, msgid=msgid, received_at=now_s))
    return msgid


def send_template(state: SimState, token: str | None, body: bytes) -> Answer:
    """Answer one `POST /cgi-bin/message/template/send` as WeChat would, updating the state.

    Order: token (41001, 42001, 40001), body (47001), template of this app (40037), openid (40003 malformed
    or of another app), follower (43019 blacklisted, 43004 unsubscribed), data (47003); then the injected
    fault (the app's own set, else the global one; a reset is not processed); then quotas (45009, 45011 per
    minute or past the QPS); then dedup and delivery.
    """
    delay_s, appid = 0.0, None
    try:
        appid = _appid_for(state, token)
        message = _validate(state, appid, _payload(body))
        fault = state.faults_for(appid).decide()
        delay_s = fault.delay_s
        if fault.reset:
            return Answer(None, 0, delay_s, reset=True, appid=appid)
        if fault.http_status is not None:
            return Answer(None, fault.http_status, delay_s, appid=appid)
        if fault.errcode is not None:
            raise _Reject(fault.errcode)
        msgid = _accept(state, appid, message)
    except _Reject as reject:
        body_out = errcodes.error_body(reject.errcode, state.clock(), reject.errmsg)
        return Answer(body_out, 200, delay_s, appid=appid)
    return Answer({"errcode": errcodes.OK, "errmsg": "ok", "msgid": msgid}, 200, delay_s, appid=appid)
