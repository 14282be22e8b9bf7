"""WeChat callback verification: the plaintext signature, safe mode's msg_signature and its AES envelope.

WECHAT_API.md s.4-5. The plaintext `signature` covers token, timestamp and nonce only; safe mode's
`msg_signature` also covers the `Encrypt` element, and the envelope `base64(AES-256-CBC(key,
iv=key[:16])(random16 + len(msg) as 4 bytes big-endian + msg + appid, PKCS#7-padded to 32 bytes))` seals
the appid the message is for. Pure functions; every check that fails raises `EnvelopeError`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "PAD_BLOCK_BYTES",
    "EnvelopeError",
    "msg_signature",
    "open_envelope",
    "signature_matches",
    "wechat_signature",
]

PAD_BLOCK_BYTES = 32  # WeChat pads to 32 bytes, not to the AES block of 16
_RANDOM_BYTES = 16
_LENGTH_BYTES = 4


class EnvelopeError(ValueError):
    """An Encrypt element that does not open; `reason` is "undecryptable" or "appid" (a metric label)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _sha1_of_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's scheme is SHA1


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """The plaintext `signature`: hex sha1 of token, timestamp and nonce sorted and joined."""
    return _sha1_of_sorted(token, timestamp, nonce)


def msg_signature(token: str, timestamp: str, nonce: str, encrypt: str) -> str:
    """Safe mode's `msg_signature`: hex sha1 of token, timestamp, nonce and Encrypt, sorted and joined."""
    return _sha1_of_sorted(token, timestamp, nonce, encrypt)


def signature_matches(given: str, expected: str) -> bool:
    """Constant-time comparison of a query signature with the expected hex digest (any text is safe)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def open_envelope(aes_key: bytes, encrypt: str, appid: str) -> bytes:
    """The message sealed in a safe-mode `Encrypt` text, if it is sealed for `appid`.

    Checks strictly: canonical base64, a whole number of 32-byte blocks, PKCS#7 padding of 1 to 32 bytes all
    equal, a length that fits, and the appid after the message. Call it only after `msg_signature` matched
    (it answers which check failed, so it must not be an oracle for unsigned input).
    """
    try:
        ciphertext = base64.b64decode(encrypt.encode("ascii"), validate=True)
    except (UnicodeEncodeError, ValueError):
        raise EnvelopeError("undecryptable") from None
    if not ciphertext or len(ciphertext) % PAD_BLOCK_BYTES:
        raise EnvelopeError("undecryptable")
    decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(aes_key[:16])).decryptor()
    plain = decryptor.update(ciphertext) + decryptor.finalize()
    content = _unpad(plain)[_RANDOM_BYTES:]
    if len(content) < _LENGTH_BYTES:
        raise EnvelopeError("undecryptable")
    length = int.from_bytes(content[:_LENGTH_BYTES], "big")
    if length > len(content) - _LENGTH_BYTES:
        raise EnvelopeError("undecryptable")
    message, sealed_for = content[_LENGTH_BYTES : _LENGTH_BYTES + length], content[_LENGTH_BYTES + length :]
    if not hmac.compare_digest(sealed_for, appid.encode()):
        raise EnvelopeError("appid")
    return message


def _unpad(plain: bytes) -> bytes:
    pad = plain[-1]
    if not 1 <= pad <= PAD_BLOCK_BYTES or plain[-pad:] != bytes([pad]) * pad:
        raise EnvelopeError("undecryptable")
    return plain[:-pad]
