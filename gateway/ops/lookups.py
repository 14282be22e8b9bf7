"""`pushgw events show ID`, `pushgw customers show ID`, `pushgw bindings import FILE`: the operator's calls
of the ingress API, signed for them (RFC 9421, gateway/core/signing.py) with a key of PUSHGW_API_KEYS.

The key is PUSHGW_OPERATOR_KEY_ID (a key with only the scopes needed is enough: `events` for events,
`bindings+customers` for customers and the import), or the only key there is; with no key at all the calls go
unsigned, which only an open `pushgw dev` gateway takes. Events are kept per source (the key that sent them):
an event is found with the key of the source that sent it. Output is JSON on stdout; the secret is never
printed, and neither is an openid (the binding's is shown masked, as in logs).

Before anything else each command asks the gateway's /readyz whether its Redis holds pushgw's data: a gateway
whose Redis lost its data (or was never initialised) is refused, exit 3, as `pushgw dlq` refuses such a
Redis, instead of answering "not found". Exit status: 0 found (imported); 1 the gateway answered an error
(not found, refused, some bindings rejected); 2 the gateway could not be asked; 3 its Redis holds no data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from gateway.core import clock
from gateway.core.masking import mask_openid
from gateway.core.operator import NO_DATA_EXIT
from gateway.core.settings import ConfigError, Settings
from gateway.core.signing import signed_headers

FOUND, REFUSED, UNREACHABLE = 0, 1, 2
BATCH_BINDINGS = 500  # what POST /v1/bindings/batch takes at most (gateway/handlers/bindings.py)
TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class Unreachable(Exception):
    """The gateway did not answer (connection refused, timeout)."""


def operator_key(settings: Settings) -> tuple[str, str] | None:
    """(key id, secret) to sign with; None: no keys, unsigned. Raises ConfigError naming the variable."""
    keys = settings.api_keys
    if not keys:
        return None
    key_id = settings.operator_key_id
    if not key_id:
        if len(keys) > 1:
            raise ConfigError(
                f"PUSHGW_OPERATOR_KEY_ID: PUSHGW_API_KEYS holds {len(keys)} keys; name the one to sign with"
            )
        key_id = next(iter(keys))
    if key_id not in keys:
        raise ConfigError(f"PUSHGW_OPERATOR_KEY_ID={key_id!r}: no such key in PUSHGW_API_KEYS")
    return key_id, keys[key_id]


class GatewayCalls:
    """Signed calls of one gateway: `get`/`post` answer (status, JSON body); raise Unreachable."""

    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self._session = session
        self._base = settings.gateway_url
        self._key = operator_key(settings)

    async def call(self, method: str, target: str, body: bytes = b"") -> Reply:
        headers = {"Content-Type": "application/json"} if body else {}
        if self._key is not None:
            headers.update(signed_headers(*self._key, method, target, body))
        try:
            async with self._session.request(
                method, self._base + target, data=body or None, headers=headers
            ) as response:
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{self._base}: {type(exc).__name__}") from None
        try:
            return Reply(response.status, orjson.loads(raw) if raw else None)
        except orjson.JSONDecodeError:
            return Reply(response.status, None)

    async def data_refusal(self) -> str | None:
        """Why the gateway's Redis holds no pushgw data (its /readyz problems), or None."""
        ready = await self.call("GET", "/readyz")
        if isinstance(ready.body, dict) and ready.body.get("data_lost"):
            return "; ".join(str(problem) for problem in ready.body.get("problems", []))
        return None


def _print(document: Any) -> None:
    sys.stdout.write(orjson.dumps(document).decode() + "\n")


def _say(command: str, line: str) -> None:
    sys.stderr.write(f"pushgw {command}: {line}\n")


def _error_of(reply: Reply) -> str:
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(error, dict):
        return f"{reply.status} {error.get('code')}: {error.get('message')}"
    return f"HTTP {reply.status}"


async def _show_event(gateway: GatewayCalls, event_id: str) -> int:
    reply = await gateway.call("GET", f"/v1/events/{quote(event_id, safe='')}")
    if reply.status != 200:
        _say("events", f"{event_id}: {_error_of(reply)} (events are kept per source: sign with its key)")
        return REFUSED
    _print(reply.body)
    return FOUND


def _masked_binding(body: Any) -> Any:
    if isinstance(body, dict) and isinstance(body.get("openid"), str):
        return {**body, "openid": mask_openid(body["openid"])}
    return body


async def _show_customer(gateway: GatewayCalls, customer_id: str, since: str | None, limit: int) -> int:
    path = f"/v1/customers/{quote(customer_id, safe='')}"
    query: dict[str, str] = {"limit": str(limit)}
    if since:
        at_ms = clock.parse_instant_ms(since, "--since")
        query["since"] = datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()
    binding = await gateway.call("GET", f"/v1/bindings/{quote(customer_id, safe='')}")
    preferences = await gateway.call("GET", f"{path}/preferences")
    timeline = await gateway.call("GET", f"{path}/events?{urlencode(query)}")
    shown: dict[str, Any] = {"customer_id": customer_id}
    status = FOUND
    for name, reply in (("binding", binding), ("preferences", preferences), ("timeline", timeline)):
        if reply.status == 200:
            body = reply.body
            shown[name] = _masked_binding(body) if name == "binding" else body
            if name == "timeline" and isinstance(body, dict):
                shown[name] = body.get("events", [])
        elif name == "binding" and reply.status == 404:
            shown[name] = None  # not bound (or erased)
        else:
            shown[name] = {"error": _error_of(reply)}
            status = REFUSED
    _print(shown)
    return status


def _binding_lines(path: str) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or None when the line is not JSON) of each non-empty line."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield number, orjson.loads(line)
            except orjson.JSONDecodeError:
                yield number, None


async def _import_bindings(gateway: GatewayCalls, path: str) -> int:
    """POST the file's bindings in batches; prints each rejected one (customer id, line, error: never the
    openid) and one summary line."""
    try:
        items = list(_binding_lines(path))
    except (OSError, UnicodeDecodeError) as exc:
        _say("bindings", f"cannot read {path}: {type(exc).__name__}")
        return REFUSED
    bound = rejected = 0
    for start in range(0, len(items), BATCH_BINDINGS):
        chunk = items[start : start + BATCH_BINDINGS]
        invalid = [(number, None) for number, item in chunk if not isinstance(item, dict)]
        valid = [(number, item) for number, item in chunk if isinstance(item, dict)]
        for number, _ in invalid:
            _print({"line": number, "status": "rejected", "error": "not a JSON object"})
        rejected += len(invalid)
        if not valid:
            continue
        body = orjson.dumps({"bindings": [item for _, item in valid]})
        reply = await gateway.call("POST", "/v1/bindings/batch", body)
        if reply.status != 200 or not isinstance(reply.body, dict):
            _say("bindings", f"lines {valid[0][0]}-{valid[-1][0]}: {_error_of(reply)}; stopped")
            _print({"bound": bound, "rejected": rejected, "not_sent": len(items) - start})
            return REFUSED
        for (number, _), result in zip(valid, reply.body["results"], strict=True):
            if result.get("status") == "bound":
                bound += 1
            else:
                rejected += 1
                _print({"line": number, **result})
    _print({"bound": bound, "rejected": rejected})
    return FOUND if rejected == 0 else REFUSED


async def run_lookup(settings: Settings, args: argparse.Namespace) -> int:
    """Run `pushgw events|customers show` or `pushgw bindings import`; returns the exit status."""
    timeout = aiohttp.ClientTimeout(total=TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        gateway = GatewayCalls(session, settings)
        try:
            if (refusal := await gateway.data_refusal()) is not None:
                _say(
                    args.command, f"refused: the gateway {settings.gateway_url} has no pushgw data: {refusal}"
                )
                return NO_DATA_EXIT
            if args.command == "events":
                return await _show_event(gateway, args.event_id)
            if args.command == "customers":
                return await _show_customer(gateway, args.customer_id, args.since, args.limit)
            return await _import_bindings(gateway, args.file)
        except Unreachable as exc:
            _say(args.command, f"cannot reach the gateway (PUSHGW_GATEWAY_URL, --gateway-url): {exc}")
            return UNREACHABLE
