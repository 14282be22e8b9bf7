"""The client side of ingress request signatures: RFC 9421 HTTP Message Signatures with HMAC-SHA256, the
pushgw profile (docs/api.md), and the signature base both sides build.

A signed request carries
  Content-Digest: sha-256=:BASE64(SHA-256(body)):                       (RFC 9530; requests with a body)
  Signature-Input: pushgw=("@method" "@path" "@query" "content-digest");created=UNIX;keyid="K";nonce="N"
  Signature: pushgw=:BASE64(HMAC-SHA256(secret, signature base)):
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable

LABEL = "pushgw"
ALGORITHM = "hmac-sha256"
# a request with one of these methods has a body, so its signature covers the body's digest
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def content_digest(body: bytes) -> str:
    """The RFC 9530 Content-Digest field value of `body` (SHA-256)."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def signature_base(components: Iterable[tuple[str, str]], signature_params: str) -> bytes:
    """RFC 9421 s.2.5: one `"identifier": value` line per covered component in the order covered, then the
    `"@signature-params"` line (no trailing newline). Identifiers are given serialized (quoted)."""
    lines = [f"{identifier}: {value}" for identifier, value in components]
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines).encode("ascii")


def new_nonce() -> str:
    """24 random characters of A-Za-z0-9_- (the profile allows 16 to 64)."""
    return secrets.token_urlsafe(18)


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    target: str,
    body: bytes = b"",
    *,
    created_s: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that sign one request. `target` is the path with its query as sent (`/v1/x?since=...`),
    already percent-encoded; `created_s` defaults to now and `nonce` to a fresh random one."""
    path, _, query = target.partition("?")
    method = method.upper()
    components = [('"@method"', method), ('"@path"', path or "/"), ('"@query"', f"?{query}")]
    headers: dict[str, str] = {}
    if body or method in BODY_METHODS:
        digest = content_digest(body)
        headers["Content-Digest"] = digest
        components.append(('"content-digest"', digest))
    created = int(time.time()) if created_s is None else created_s
    params = (
        f"({' '.join(identifier for identifier, _ in components)})"
        f';created={created};keyid="{key_id}";nonce="{nonce or new_nonce()}"'
    )
    mac = hmac.new(secret.encode(), signature_base(components, params), hashlib.sha256).digest()
    headers["Signature-Input"] = f"{LABEL}={params}"
    headers["Signature"] = f"{LABEL}=:{base64.b64encode(mac).decode()}:"
    return headers
