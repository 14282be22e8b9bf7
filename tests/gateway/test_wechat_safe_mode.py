"""WeChat safe mode at /wechat/callback (WECHAT_API.md s.5): what wechatpy's WeChatCrypto, a third party,
encrypts is accepted; plaintext, a wrong appid or key, a bad msg_signature, a stale timestamp, a tampered
envelope and a DTD inside or outside it are refused in the one error shape, never with a 5xx."""

from __future__ import annotations

import base64
import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from wechatpy.crypto import WeChatCrypto

from gateway.core.settings import ConfigError, Settings
from gateway.wechat_crypto import EnvelopeError, open_envelope
from tests.conftest import Stack
from tests.gateway.helpers import assert_error_shape
from tests.support import APPID, eventually, make_event

pytestmark = pytest.mark.e2e

TOKEN = "safe-mode-callback-token"  # noqa: S105 - a fixture callback token
AES_BYTES = bytes(range(7, 39))
AES_KEY = base64.b64encode(AES_BYTES).decode()[:43]
OTHER_AES_KEY = base64.b64encode(bytes(range(100, 132))).decode()[:43]
OPENID = "oSafeModeUser_0001"
PATH = "/wechat/callback"


def _now() -> str:
    return str(int(time.time()))


def _sha1_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's scheme


def _finish_xml(msgid: str, status: str = "success", openid: str = OPENID) -> str:
    return (
        f"<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><FromUserName><![CDATA[{openid}]]>"
        f"</FromUserName><CreateTime>{_now()}</CreateTime><MsgType><![CDATA[event]]></MsgType>"
        f"<Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event><MsgID>{msgid}</MsgID>"
        f"<Status><![CDATA[{status}]]></Status></xml>"
    )


def _envelope(encrypt: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[gh_7f083739789a]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    ).encode()


def _query(encrypt: str, timestamp: str | None = None, nonce: str = "n0nce") -> dict[str, str]:
    """The query WeChat sends with a safe-mode post of `encrypt` (both signatures)."""
    timestamp = _now() if timestamp is None else timestamp
    return {
        "signature": _sha1_sorted(TOKEN, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
        "encrypt_type": "aes",
        "msg_signature": _sha1_sorted(TOKEN, timestamp, nonce, encrypt),
    }


def wechatpy_post(
    message: str,
    *,
    appid: str = APPID,
    key: str = AES_KEY,
    timestamp: str | None = None,
    nonce: str = "n0nce",
) -> tuple[dict[str, str], bytes]:
    """Query and body of a safe-mode post as wechatpy's WeChatCrypto encrypts and signs it."""
    timestamp = _now() if timestamp is None else timestamp
    reply = WeChatCrypto(TOKEN, key, appid).encrypt_message(message, nonce, timestamp)
    root = ET.fromstring(reply)  # noqa: S314 - XML wechatpy just wrote
    encrypt, signed = root.findtext("Encrypt") or "", root.findtext("MsgSignature") or ""
    query = _query(encrypt, timestamp, nonce)
    assert query["msg_signature"] == signed  # our test's signature agrees with wechatpy's
    return query, _envelope(encrypt)


def seal(plain: bytes) -> str:
    """Encrypt already-padded bytes with the fixture key, as an Encrypt text (no checks: for tampering)."""
    encryptor = Cipher(algorithms.AES(AES_BYTES), modes.CBC(AES_BYTES[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def frame(message: bytes, appid: str = APPID, length: int | None = None) -> bytes:
    """random16 + length + message + appid, not yet padded."""
    stated = len(message) if length is None else length
    return b"R" * 16 + stated.to_bytes(4, "big") + message + appid.encode()


def pkcs7(plain: bytes, block: int = 32) -> bytes:
    pad = block - len(plain) % block
    return plain + bytes([pad]) * pad


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("pushgw_wechat_callbacks_refused_total", {"reason": reason}) or 0.0


def _finish_count(status: str) -> float:
    return REGISTRY.get_sample_value("pushgw_wechat_finish_events_total", {"status": status}) or 0.0


async def _stack(stack_for: Callable[..., Any], workers: int = 0) -> Stack:
    stack: Stack = await stack_for(
        workers=workers, wechat_callback_token=TOKEN, wechat_encoding_aes_key=AES_KEY
    )
    return stack


async def _post(stack: Stack, params: dict[str, str], body: bytes) -> tuple[int, Any]:
    async with stack.session.post(stack.client.url + PATH, params=params, data=body) as resp:
        text = await resp.text()
        if resp.status >= 400:
            answer = orjson.loads(text)
            assert_error_shape(answer)
            return resp.status, answer
        return resp.status, text


async def _view(stack: Stack, event_id: str) -> dict[str, Any]:
    status, body = await stack.client.call("GET", f"/v1/events/{event_id}")
    assert status == 200
    view: dict[str, Any] = body
    return view


async def _delivered(stack: Stack, customer_id: str) -> tuple[str, str]:
    """Bind, send one event and wait until it is delivered: (event id, msgid)."""
    await stack.client.bind(customer_id, OPENID)
    event = make_event(customer_id=customer_id)
    assert (await stack.client.post_event(event))[0] == 202
    event_id: str = event["event_id"]

    async def delivered() -> bool:
        return bool((await _view(stack, event_id))["status"] == "delivered")

    await eventually(delivered)
    return event_id, str((await _view(stack, event_id))["msgid"])


# --- settings --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["short", AES_KEY[:42], AES_KEY + "A", AES_KEY[:42] + "!", AES_KEY[:42] + "é", AES_KEY[:41] + "=="]
)
def test_a_bad_encoding_aes_key_fails_at_startup_naming_the_variable(bad: str) -> None:
    environ = {
        "PUSHGW_WECHAT_ENCODING_AES_KEY": bad,
        "PUSHGW_WECHAT_CALLBACK_TOKEN": TOKEN,
        "PUSHGW_WECHAT_APPID": APPID,
    }
    with pytest.raises(ConfigError, match="PUSHGW_WECHAT_ENCODING_AES_KEY") as raised:
        Settings.from_env(environ)
    assert bad not in str(raised.value)


def test_the_encoding_aes_key_is_a_masked_secret_that_needs_token_and_appid() -> None:
    environ = {"PUSHGW_WECHAT_ENCODING_AES_KEY": AES_KEY, "PUSHGW_WECHAT_CALLBACK_TOKEN": TOKEN}
    good = Settings.from_env({**environ, "PUSHGW_WECHAT_APPID": APPID})
    assert good.wechat_encoding_aes_key == AES_KEY
    assert AES_KEY not in repr(good)
    with pytest.raises(ConfigError, match="PUSHGW_WECHAT_APPID"):
        Settings.from_env(environ)
    with pytest.raises(ConfigError, match="PUSHGW_WECHAT_CALLBACK_TOKEN"):
        Settings.from_env({"PUSHGW_WECHAT_ENCODING_AES_KEY": AES_KEY, "PUSHGW_WECHAT_APPID": APPID})


# --- the envelope, against wechatpy ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 11, 12, 13, 43, 44, 45, 300, 2000])
def test_what_wechatpy_seals_opens(length: int) -> None:
    message = "界" * length  # any text: the envelope does not look inside
    query, body = wechatpy_post(message)
    encrypt = ET.fromstring(body).findtext("Encrypt") or ""  # noqa: S314 - XML the test just wrote
    assert open_envelope(AES_BYTES, encrypt, APPID) == message.encode()
    with pytest.raises(EnvelopeError, match="appid"):
        open_envelope(AES_BYTES, encrypt, "wx_other_app")
    assert query["encrypt_type"] == "aes"


# --- the endpoint ----------------------------------------------------------------------------------------


async def test_a_wechatpy_encrypted_finish_event_is_recorded(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for, workers=1)
    event_id, msgid = await _delivered(stack, "C400001")
    before = _finish_count("failed:user block")
    query, body = wechatpy_post(_finish_xml(msgid, "failed:user block"))
    assert await _post(stack, query, body) == (200, "success")
    assert (await _view(stack, event_id))["finish_status"] == "failed:user block"
    assert _finish_count("failed:user block") == before + 1
    _, binding = await stack.client.call("GET", "/v1/bindings/C400001")
    assert binding["status"] == "blocked"


async def test_a_safe_mode_receipt_naming_another_recipient_changes_nothing(
    stack_for: Callable[..., Any],
) -> None:
    stack = await _stack(stack_for, workers=1)
    event_id, msgid = await _delivered(stack, "C400002")
    before = _finish_count("recipient_mismatch")
    query, body = wechatpy_post(_finish_xml(msgid, "failed:user block", openid="oSomeoneElse_9"))
    assert await _post(stack, query, body) == (200, "success")
    assert _finish_count("recipient_mismatch") == before + 1
    assert "finish_status" not in await _view(stack, event_id)
    _, binding = await stack.client.call("GET", "/v1/bindings/C400002")
    assert binding["status"] == "active"


async def test_the_simulator_in_safe_mode_reaches_the_lifecycle(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for, workers=1)
    section = {
        "url": stack.client.url + PATH,
        "token": TOKEN,
        "encoding_aes_key": AES_KEY,
        "retry_delay_ms": 0,
    }
    faults = await stack.sim("PUT", "/sim/faults", {"callback": section})
    assert faults["callback"]["safe_mode"] is True and AES_KEY not in orjson.dumps(faults).decode()
    event_id, _ = await _delivered(stack, "C400003")

    async def finished() -> bool:
        return "finish_status" in await _view(stack, event_id)

    await eventually(finished)
    assert (await _view(stack, event_id))["finish_status"] == "success"
    [posted] = (await stack.sim("GET", "/sim/callbacks"))["callbacks"]
    assert (posted["acknowledged"], posted["tries"]) == (True, 1)


async def test_plaintext_is_refused_when_a_key_is_set(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    timestamp = _now()
    plain = {"signature": _sha1_sorted(TOKEN, timestamp, "n"), "timestamp": timestamp, "nonce": "n"}
    before = _refused("plaintext")
    status, answer = await _post(stack, plain, _finish_xml("1").encode())
    assert (status, answer["error"]["code"]) == (401, "unauthorized")
    query, body = wechatpy_post(_finish_xml("1"))
    for missing in ("encrypt_type", "msg_signature"):
        params = {name: value for name, value in query.items() if name != missing}
        assert (await _post(stack, params, body))[0] == 401
    assert (await _post(stack, {**query, "encrypt_type": "raw"}, body))[0] == 401
    assert _refused("plaintext") == before + 4
    # the URL check stays plaintext in safe mode (WECHAT_API.md s.5)
    async with stack.session.get(stack.client.url + PATH, params={**plain, "echostr": "e42"}) as resp:
        assert (resp.status, await resp.text()) == (200, "e42")


async def test_a_wrong_appid_or_key_is_refused(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    before = _refused("appid")
    query, body = wechatpy_post(_finish_xml("1"), appid="wx_other_app")
    assert (await _post(stack, query, body))[0] == 401
    assert _refused("appid") == before + 1
    query, body = wechatpy_post(_finish_xml("1"), key=OTHER_AES_KEY)
    assert (await _post(stack, query, body))[0] == 401


async def test_a_bad_msg_signature_is_refused(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    before = _refused("signature")
    query, body = wechatpy_post(_finish_xml("1"))
    wrong = [
        {**query, "msg_signature": query["signature"]},  # the plaintext signature does not cover Encrypt
        {**query, "msg_signature": "0" * 40},
        {**query, "msg_signature": "é" * 40},
        {**query, "nonce": "other"},
        {**query, "timestamp": str(int(query["timestamp"]) - 1)},
    ]
    for params in wrong:
        status, answer = await _post(stack, params, body)
        assert (status, answer["error"]["code"]) == (401, "unauthorized"), params
    other_encrypt = wechatpy_post(_finish_xml("2"))[1]  # a valid envelope under the first one's signature
    assert (await _post(stack, query, other_encrypt))[0] == 401
    assert _refused("signature") == before + len(wrong) + 1


async def test_a_stale_timestamp_is_refused_in_safe_mode(stack_for: Callable[..., Any]) -> None:
    stack = await _stack(stack_for)
    before = _refused("stale")
    for skew_s in (-30 * 86400, -301, 301):
        query, body = wechatpy_post(_finish_xml("1"), timestamp=str(int(time.time()) + skew_s))
        assert (await _post(stack, query, body))[0] == 401
    assert _refused("stale") == before + 3


_GOOD = frame(b"<xml><MsgType>event</MsgType></xml>")


def _flip_pad_byte(encrypt: str) -> str:
    """Flip the last byte of the second-to-last block: CBC turns it into a flip of the padding byte."""
    raw = bytearray(base64.b64decode(encrypt))
    raw[-33] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


TAMPERED: list[tuple[str, str]] = [
    ("not-base64", "!!!not base64!!!"),
    ("not-ascii", "密文" * 10),
    ("base64-with-spaces", seal(pkcs7(_GOOD))[:20] + " " + seal(pkcs7(_GOOD))[20:]),
    ("empty-after-decoding", "===="),
    ("not-whole-blocks", seal(pkcs7(_GOOD))[:24]),  # 18 bytes
    ("one-aes-block", base64.b64encode(base64.b64decode(seal(pkcs7(_GOOD)))[:16]).decode()),
    ("padded-to-16-not-32", seal(_GOOD + bytes([16 - len(_GOOD) % 16]) * (16 - len(_GOOD) % 16))),
    ("pad-byte-zero", seal(pkcs7(_GOOD)[:-1] + b"\x00")),
    ("pad-byte-33", seal(_GOOD + b"x" * (31 - len(_GOOD) % 32) + b"\x21")),
    ("pad-bytes-differ", seal(pkcs7(_GOOD)[:-2] + b"\x01" + pkcs7(_GOOD)[-1:])),
    ("length-past-the-end", seal(pkcs7(frame(b"<xml/>", length=10_000)))),
    ("no-room-for-a-length", seal(pkcs7(b"R" * 16 + b"\x00\x00"))),
    ("only-padding", seal(bytes([32]) * 32)),
    ("appid-cut-short", seal(pkcs7(_GOOD[: -len(APPID) + 1]))),
    ("another-appid", seal(pkcs7(frame(b"<xml/>", appid="wx_test_apq")))),
    ("flipped-ciphertext-byte", _flip_pad_byte(seal(pkcs7(_GOOD)))),
]


@pytest.mark.parametrize("encrypt", [case for _, case in TAMPERED], ids=[name for name, _ in TAMPERED])
async def test_a_tampered_envelope_is_refused_without_a_500(
    stack_for: Callable[..., Any], encrypt: str
) -> None:
    """Each one signed with the token (so it passes msg_signature and reaches the envelope checks)."""
    stack = await _stack(stack_for)
    status, answer = await _post(stack, _query(encrypt), _envelope(encrypt))
    assert (status, answer["error"]["code"]) == (401, "unauthorized")


def test_the_envelope_checks_hold_without_http() -> None:
    assert open_envelope(AES_BYTES, seal(pkcs7(_GOOD)), APPID) == b"<xml><MsgType>event</MsgType></xml>"
    for name, encrypt in TAMPERED:
        with pytest.raises(EnvelopeError):
            open_envelope(AES_BYTES, encrypt, APPID)
        assert name


_DTD_MESSAGE = (
    '<!DOCTYPE xml [<!ENTITY st "failed:user block">]><xml><FromUserName>oSafeModeUser_0001</FromUserName>'
    "<Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID><Status>&st;</Status></xml>"
)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-be", "utf-32"])
async def test_a_dtd_inside_or_outside_the_envelope_is_refused(
    stack_for: Callable[..., Any], encoding: str
) -> None:
    stack = await _stack(stack_for)
    encrypt = seal(pkcs7(frame(_DTD_MESSAGE.encode(encoding))))
    status, answer = await _post(stack, _query(encrypt), _envelope(encrypt))
    assert (status, answer["error"]["code"]) == (400, "invalid_xml")
    declared = f'<!DOCTYPE xml [<!ENTITY e "{encrypt}">]>'
    outer = f"{declared}<xml><ToUserName>gh_1</ToUserName><Encrypt>&e;</Encrypt></xml>"
    status, answer = await _post(stack, _query(encrypt), outer.encode(encoding))
    assert (status, answer["error"]["code"]) == (400, "invalid_xml")


# --- never a 5xx -----------------------------------------------------------------------------------------

_xmlish = st.text(max_size=200).map(lambda text: f"<xml>{text}</xml>")
_messages = (
    st.binary(max_size=300)
    | _xmlish.map(str.encode)
    | st.builds(_finish_xml, st.from_regex(r"[0-9]{0,20}", fullmatch=True)).map(str.encode)
    | st.tuples(_xmlish, st.sampled_from(["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1"])).map(
        lambda pair: pair[0].encode(pair[1], "replace")
    )
)


@st.composite
def safe_mode_posts(draw: st.DrawFn) -> tuple[dict[str, str], bytes]:
    """Posts that get past msg_signature: random Encrypt text, random ciphertext, or a well-sealed random
    message (with a random appid and length now and then), plus raw bodies with a good query."""
    kind = draw(st.sampled_from(["text", "ciphertext", "sealed", "raw"]))
    if kind == "text":
        encrypt = draw(st.text(max_size=120))
    elif kind == "ciphertext":
        encrypt = base64.b64encode(draw(st.binary(max_size=200))).decode()
    else:
        message = draw(_messages)
        appid = draw(st.sampled_from([APPID, APPID, "", "wx_other"]))
        length = draw(st.none() | st.integers(0, 2**32 - 1))
        encrypt = seal(pkcs7(frame(message, appid, length)))
    if kind == "raw":
        return _query(encrypt), draw(_messages)
    return _query(encrypt), _envelope(encrypt)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(post=safe_mode_posts())
async def test_no_safe_mode_post_gets_a_5xx(safe_stack: Stack, post: tuple[dict[str, str], bytes]) -> None:
    params, body = post
    status, _ = await _post(safe_stack, params, body)
    assert status in (200, 400, 401, 413)


@settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_messages)
async def test_no_plaintext_body_gets_a_5xx(plain_stack: Stack, body: bytes) -> None:
    timestamp = _now()
    params = {"signature": _sha1_sorted(TOKEN, timestamp, "n"), "timestamp": timestamp, "nonce": "n"}
    status, _ = await _post(plain_stack, params, body)
    assert status in (200, 400, 413)


@pytest.fixture
async def safe_stack(stack_for: Callable[..., Any]) -> Stack:
    """One gateway in safe mode for every example (hypothesis runs them all within one test call)."""
    return await _stack(stack_for)


@pytest.fixture
async def plain_stack(stack_for: Callable[..., Any]) -> Stack:
    built: Stack = await stack_for(workers=0, wechat_callback_token=TOKEN)
    return built
