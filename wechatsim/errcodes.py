"""The WeChat errcodes the simulator answers, with WeChat's messages and the trailing request id."""

from __future__ import annotations

import secrets

__all__ = ["MESSAGES", "error_body", "new_rid"]

OK = 0
SYSTEM_BUSY = -1
INVALID_CREDENTIAL = 40001
INVALID_GRANT_TYPE = 40002
INVALID_OPENID = 40003
INVALID_APPID = 40013
INVALID_TEMPLATE_ID = 40037
INVALID_APPSECRET = 40125
ACCESS_TOKEN_MISSING = 41001
APPID_MISSING = 41002
APPSECRET_MISSING = 41004
ACCESS_TOKEN_EXPIRED = 42001
REQUIRE_SUBSCRIBE = 43004
BLACKLISTED = 43019
DAILY_QUOTA = 45009
MINUTE_QUOTA = 45011
DATA_FORMAT = 47001
ARGUMENT_INVALID = 47003

MESSAGES: dict[int, str] = {
    OK: "ok",
    SYSTEM_BUSY: "system error",
    INVALID_CREDENTIAL: "invalid credential, access_token is invalid or not latest",
    INVALID_GRANT_TYPE: "invalid grant_type",
    INVALID_OPENID: "invalid openid",
    INVALID_APPID: "invalid appid",
    40014: "invalid access_token",
    40036: "invalid template_id size",
    INVALID_TEMPLATE_ID: "invalid template_id",
    INVALID_APPSECRET: "invalid appsecret",
    ACCESS_TOKEN_MISSING: "access_token missing",
    APPID_MISSING: "appid missing",
    APPSECRET_MISSING: "appsecret missing",
    ACCESS_TOKEN_EXPIRED: "access_token expired",
    REQUIRE_SUBSCRIBE: "require subscribe",
    BLACKLISTED: "require remove blacklist",
    44002: "empty post data",
    DAILY_QUOTA: "reach max api daily quota limit",
    MINUTE_QUOTA: "api minute-quota reach limit  mustslower  retry next minute",
    DATA_FORMAT: "data format error",
    ARGUMENT_INVALID: "argument invalid!",
    48001: "api unauthorized",
    48004: "api forbidden for irregularities",
    50002: "user limited",
}


def new_rid(now_s: float) -> str:
    """A request id shaped like WeChat's (`65eac940-1a2b3c4d-5e6f7a8b`); not drawn from the fault RNG."""
    return f"{int(now_s) & 0xFFFFFFFF:08x}-{secrets.token_hex(4)}-{secrets.token_hex(4)}"


def error_body(errcode: int, now_s: float, errmsg: str | None = None) -> dict[str, object]:
    """`{"errcode", "errmsg"}` with WeChat's message for `errcode` (or `errmsg`) and a ` rid: ...` suffix."""
    text = errmsg if errmsg is not None else MESSAGES.get(errcode, "system error")
    return {"errcode": errcode, "errmsg": f"{text} rid: {new_rid(now_s)}"}
