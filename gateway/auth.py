"""Ingress request verification: RFC 9421 HTTP Message Signatures (HMAC-SHA256), the pushgw profile of
docs/api.md, and key scopes.

Every failure is one Unauthorized that never says which part was wrong; a valid signature without the route's
scope is Forbidden. Replay memory (nonces of state-changing requests) is the caller's, through Redis.
The header fields are RFC 8941 dictionaries. They are parsed here with anchored regular expressions for the
subset the profile uses: strings without escapes (no component name, key id or nonce needs one), integers,
tokens, booleans and byte sequences. Anything else is refused. Whitespace runs are matched possessively
(`*+`): a header of spaces must not cost a quadratic backtrack before the signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from multidict import CIMultiDictProxy

from gateway.core.errors import Forbidden, Unauthorized
from gateway.core.signing import ALGORITHM, BODY_METHODS, LABEL, signature_base

OPEN_SOURCE = "open"
REQUIRED_COMPONENTS = ('"@method"', '"@path"', '"@query"')
DIGEST_COMPONENT = '"content-digest"'
NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_REFUSED = "missing or invalid request signature"

_KEY = r"[a-z*][a-z0-9_.*-]*"
_STRING = r'"[\x20\x21\x23-\x5b\x5d-\x7e]*"'
_BARE = rf"(?:{_STRING}|-?[0-9]{{1,15}}|\?[01]|:[A-Za-z0-9+/=]*:|[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]*)"
_PARAM = re.compile(rf";\x20*+({_KEY})(?:=({_BARE}))?")
_PARAMS = rf"(?:;\x20*+{_KEY}(?:={_BARE})?)*"
_ITEM = rf"{_STRING}{_PARAMS}"
_INNER_LIST = rf"\(\x20*+(?:{_ITEM}(?:\x20++{_ITEM})*)?\x20*+\){_PARAMS}"
_MEMBER = re.compile(rf"({_KEY})(?:=({_INNER_LIST}|{_BARE}{_PARAMS}))?")
_INNER = re.compile(rf"\((\x20*+(?:{_ITEM}(?:\x20++{_ITEM})*)?)\x20*+\)")
_LIST_ITEM = re.compile(rf"({_STRING})({_PARAMS})")
_SEPARATOR = re.compile(r"[\x20\t]*,[\x20\t]*")


class Scope(StrEnum):
    """What a key may call (PUSHGW_API_KEY_SCOPES)."""

    EVENTS = "events"
    BINDINGS = "bindings"
    CUSTOMERS = "customers"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the key id (the event-id scope) and the signature's nonce (None when open)."""

    source: str
    nonce: str | None


@dataclass(frozen=True)
class Target:
    """The parts of a request a signature may cover. `raw_path` is the request target as sent."""

    method: str
    raw_path: str
    scheme: str
    authority: str
    headers: CIMultiDictProxy[str]

    def component(self, identifier: str) -> str:
        """The value of one covered component (a quoted identifier); raises Unauthorized."""
        path, mark, query = self.raw_path.partition("?")
        match identifier:
            case '"@method"':
                return self.method
            case '"@path"':
                return path or "/"
            case '"@query"':
                return f"?{query}"
            case '"@authority"':
                return self.authority.lower()
            case '"@scheme"':
                return self.scheme.lower()
            case '"@request-target"':
                return self.raw_path
            case '"@target-uri"':
                return f"{self.scheme.lower()}://{self.authority.lower()}{path or '/'}{mark}{query}"
        name = identifier[1:-1]
        if name.startswith("@") or name != name.lower() or name not in self.headers:
            raise Unauthorized(_REFUSED)
        return ", ".join(value.strip() for value in self.headers.getall(name))


def parse_dictionary(value: str) -> dict[str, str]:
    """An RFC 8941 dictionary field of the profile's subset: member name -> its value as written.
    Raises Unauthorized for anything it cannot parse, and for a repeated member."""
    if "," not in value:  # one member (the usual case): nothing to split
        match = _MEMBER.fullmatch(value.strip(" "))
        if match is None:
            raise Unauthorized(_REFUSED)
        return {match[1]: match[2] or "?1"}
    members: dict[str, str] = {}
    end = len(value.rstrip(" \t"))
    position = len(value) - len(value.lstrip(" \t"))
    while position < end:
        match = _MEMBER.match(value, position, end)
        if match is None or match[1] in members:
            raise Unauthorized(_REFUSED)
        members[match[1]] = match[2] or "?1"
        position = match.end()
        if position == end:
            break
        separator = _SEPARATOR.match(value, position, end)
        if separator is None or separator.end() == end:
            raise Unauthorized(_REFUSED)
        position = separator.end()
    return members


def _byte_sequence(value: str) -> bytes:
    if len(value) < 2 or value[0] != ":" or value[-1] != ":":
        raise Unauthorized(_REFUSED)
    try:
        return base64.b64decode(value[1:-1], validate=True)
    except binascii.Error:
        raise Unauthorized(_REFUSED) from None


@dataclass(frozen=True)
class SignatureInput:
    """One signature's covered components (quoted identifiers) and parameters, and their serialization."""

    components: tuple[str, ...]
    params: dict[str, str]
    serialized: str

    @classmethod
    def parse(cls, value: str) -> SignatureInput:
        inner = _INNER.match(value)
        if inner is None:
            raise Unauthorized(_REFUSED)
        components: list[str] = []
        for item in _LIST_ITEM.finditer(inner[1]):
            if item[2] or item[1] in components:  # component parameters (;sf, ;req...) are not supported
                raise Unauthorized(_REFUSED)
            components.append(item[1])
        params: dict[str, str] = {}
        for param in _PARAM.finditer(value, inner.end()):
            if param[1] in params:
                raise Unauthorized(_REFUSED)
            params[param[1]] = param[2] or "?1"
        serialized = f"({' '.join(components)})" + "".join(
            f";{name}" if raw == "?1" else f";{name}={_canonical(raw)}" for name, raw in params.items()
        )
        return cls(tuple(components), params, serialized)


def _canonical(raw: str) -> str:
    """RFC 8941 serialization of a bare item as written: integers lose leading zeros, the rest is as is."""
    if raw[0] == "-" or raw[0].isdigit():
        return str(int(raw))
    return raw


def _string(raw: str | None) -> str:
    if raw is None or len(raw) < 2 or raw[0] != '"':
        raise Unauthorized(_REFUSED)
    return raw[1:-1]


def _integer(raw: str | None) -> int:
    if raw is None or not re.fullmatch(r"-?[0-9]{1,15}", raw):
        raise Unauthorized(_REFUSED)
    return int(raw)


_KNOWN_PARAMS = frozenset({"created", "keyid", "nonce", "alg", "expires", "tag"})


def _check_params(params: dict[str, str], now_s: float, window_s: int) -> tuple[str, str]:
    """(keyid, nonce) of parameters that are all known, well typed and current; raises Unauthorized."""
    if not params.keys() <= _KNOWN_PARAMS:
        raise Unauthorized(_REFUSED)
    created = _integer(params.get("created"))
    if abs(now_s - created) > window_s:
        raise Unauthorized(_REFUSED)
    if "expires" in params and now_s > _integer(params["expires"]):
        raise Unauthorized(_REFUSED)
    if "alg" in params and _string(params["alg"]) != ALGORITHM:
        raise Unauthorized(_REFUSED)
    if "tag" in params:
        _string(params["tag"])
    nonce = _string(params.get("nonce"))
    if not NONCE.fullmatch(nonce):
        raise Unauthorized(_REFUSED)
    return _string(params.get("keyid")), nonce


def _check_digest(target: Target, body: bytes) -> None:
    """The Content-Digest field names the body's SHA-256 (other algorithms listed beside it are ignored)."""
    field = target.headers.getall("Content-Digest", ())
    digests = parse_dictionary(", ".join(field)) if field else {}
    given = _byte_sequence(digests.get("sha-256", ""))
    if not hmac.compare_digest(given, hashlib.sha256(body).digest()):
        raise Unauthorized(_REFUSED)


class Verifier:
    """Checks signatures against the configured keys (several may be live at once: rotation)."""

    def __init__(
        self,
        keys: Mapping[str, str],
        scopes: Mapping[str, frozenset[str]],
        window_s: int,
        *,
        open_ingress: bool,
    ) -> None:
        self._macs = {
            key_id: hmac.new(secret.encode(), digestmod=hashlib.sha256) for key_id, secret in keys.items()
        }
        self._absent = hmac.new(b"", digestmod=hashlib.sha256)
        self._scopes = {key_id: frozenset(scopes.get(key_id, ALL_SCOPES)) for key_id in keys}
        self._window_s = window_s
        self._open = open_ingress

    def verify(self, target: Target, body: bytes, scope: Scope, now_s: float) -> Caller:
        """Raises Unauthorized (never saying which part failed), or Forbidden for a key without `scope`."""
        inputs = target.headers.getall("Signature-Input", ())
        if not inputs and self._open and "Signature" not in target.headers:
            return Caller(OPEN_SOURCE, None)
        signatures = parse_dictionary(", ".join(target.headers.getall("Signature", ())))
        label, signed = self._chosen(parse_dictionary(", ".join(inputs)))
        given = _byte_sequence(signatures.get(label, ""))
        key_id, nonce = _check_params(signed.params, now_s, self._window_s)
        covered = signed.components
        if not set(REQUIRED_COMPONENTS) <= set(covered):
            raise Unauthorized(_REFUSED)
        if DIGEST_COMPONENT in covered or body or target.method in BODY_METHODS:
            if DIGEST_COMPONENT not in covered:
                raise Unauthorized(_REFUSED)
            _check_digest(target, body)
        lines = [(identifier, target.component(identifier)) for identifier in covered]
        try:
            base = signature_base(lines, signed.serialized)
        except UnicodeEncodeError:
            raise Unauthorized(_REFUSED) from None
        mac = self._macs.get(key_id)
        expected = (mac or self._absent).copy()
        expected.update(base)
        # compared even for an unknown key id, so timing does not tell which key ids exist
        if not hmac.compare_digest(expected.digest(), given) or mac is None:
            raise Unauthorized(_REFUSED)
        if scope not in self._scopes[key_id]:
            raise Forbidden(f"this key may not call {scope} routes")
        return Caller(key_id, nonce)

    @staticmethod
    def _chosen(inputs: dict[str, str]) -> tuple[str, SignatureInput]:
        """The signature labelled `pushgw`, or the only one."""
        if LABEL in inputs:
            label = LABEL
        elif len(inputs) == 1:
            label = next(iter(inputs))
        else:
            raise Unauthorized(_REFUSED)
        return label, SignatureInput.parse(inputs[label])
