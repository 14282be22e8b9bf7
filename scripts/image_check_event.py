"""`make image-check`'s last step: one signed event through a running stack, seen delivered.

Binds a customer to an openid, sends one card purchase signed as core banking does (RFC 9421, the key from
PUSHGW_IMAGE_CHECK_KEY = keyid:secret), polls the event until it is `delivered`, and checks that the
simulator holds exactly one message for it (its client_msg_id made of the key id and the event id). Stdlib
HTTP only; signing comes from gateway.core.signing, the client_msg_id from workers.render (run it with the
project's venv). Exit status 0 only when all of that holds.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from gateway.core.signing import signed_headers
from workers.render import client_msg_id

UNAVAILABLE_FOR_S = 30.0


class CheckFailed(Exception):
    """The stack answered, but not as it must."""


def expect(holds: bool, problem: str) -> None:
    if not holds:
        raise CheckFailed(problem)


def call(base: str, method: str, target: str, key: tuple[str, str] | None, body: Any = None) -> Any:
    """One request, signed when `key` is given; returns the decoded JSON answer (raises on non-2xx). A 503
    is retried after its Retry-After for up to UNAVAILABLE_FOR_S, as core banking does: each gateway
    process takes the data epoch at its own next Redis check, so one may still refuse after `epoch init`."""
    data = b"" if body is None else json.dumps(body).encode()
    deadline = time.monotonic() + UNAVAILABLE_FOR_S
    while True:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if key is not None:  # signed anew each time: a PUT's nonce is accepted once
            headers.update(signed_headers(key[0], key[1], method, target, data))
        request = urllib.request.Request(base + target, data=data or None, method=method, headers=headers)  # noqa: S310 - http on loopback
        try:
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - http on loopback
                return json.load(response)
        except urllib.error.HTTPError as exc:
            if exc.code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(min(float(exc.headers.get("Retry-After") or 1), 2.0))


def deliver_one(gateway: str, sim: str, key: tuple[str, str], timeout_s: float) -> str:
    """Send one event and wait for it; returns a one-line summary, raises CheckFailed on failure."""
    run = secrets.token_hex(4)
    customer, openid = f"CHECK{run}", f"oCheck_{run}"
    event_id = f"CHECK-{run}-000000001"
    call(gateway, "PUT", f"/v1/bindings/{customer}", key, {"openid": openid})
    event = {
        "event_id": event_id,
        "customer_id": customer,
        "account": "6222020200001234",
        "type": "card_purchase",
        "amount": "1234.56",
        "currency": "CNY",
        "balance": "5678.90",
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "counterparty": "image check",
        "channel": "POS",
    }
    started = time.monotonic()
    accepted = call(gateway, "POST", "/v1/events", key, event)
    expect(accepted.get("status") == "queued", f"event {event_id} not queued: {accepted}")
    status: dict[str, Any] = {}
    while time.monotonic() - started < timeout_s:
        status = call(gateway, "GET", f"/v1/events/{event_id}", key)
        if status["status"] in {"delivered", "failed", "dead_lettered"}:
            break
        time.sleep(0.2)
    expect(status.get("status") == "delivered", f"event {event_id} not delivered: {status}")
    elapsed_ms = (time.monotonic() - started) * 1000
    messages = call(sim, "GET", f"/sim/messages?touser={openid}", None)["messages"]
    sent, expected = [message["client_msg_id"] for message in messages], client_msg_id(key[0], event_id)
    expect(sent == [expected], f"the simulator holds {sent} for {openid}, not [{expected}]")
    return f"event {event_id}: 202 queued -> delivered in {elapsed_ms:.0f} ms; the simulator holds 1 message"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--sim", default="http://127.0.0.1:8090")
    parser.add_argument("--timeout-s", type=float, default=60.0)
    args = parser.parse_args()
    key_id, _, secret = os.environ.get("PUSHGW_IMAGE_CHECK_KEY", "").partition(":")
    if not key_id or not secret:
        sys.exit("image_check_event: set PUSHGW_IMAGE_CHECK_KEY=keyid:secret (a key of PUSHGW_API_KEYS)")
    try:
        print(deliver_one(args.gateway, args.sim, (key_id, secret), args.timeout_s))
    except (CheckFailed, urllib.error.URLError, OSError) as exc:
        print(f"image_check_event: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
