"""A core-banking callback receiver that verifies with the official Standard Webhooks library
(`standardwebhooks`, the specification's own reference implementation), not with code of ours.

The library checks what a receiver must (spec, "Verifying signatures"): the three `webhook-*` headers are
present, `webhook-timestamp` is within 5 minutes of the clock, and one of the space-separated `v1,<base64>`
signatures matches under the key (in constant time). The receiver is configured the way the README tells a
bank to configure such a library: a `whsec_<base64>` secret as it is, an API secret as
`"whsec_" + base64(secret)`. It records every request (raw count) and every verified one, answers 2xx only
after verifying, and can be told to answer another status or be stopped and started again on the same port
(a receiver that is down).
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from gateway.core.local_servers import free_port


def whsec(raw: str) -> str:
    """A raw secret in the spec's serialisation, as a Standard Webhooks library is configured with it."""
    return "whsec_" + base64.b64encode(raw.encode()).decode()


def verify(headers: Mapping[str, str], body: bytes, secrets: list[str]) -> str | None:
    """None if the library finds the request authentic and fresh under one of `secrets`, else its reason."""
    problem = "no secret"
    for secret in secrets:
        library = Webhook(secret if secret.startswith("whsec_") else whsec(secret))
        try:
            library.verify(body, dict(headers), json_parse=False)
        except WebhookVerificationError as error:
            problem = str(error)
        else:
            return None
    return problem


@dataclass(frozen=True)
class Received:
    webhook_id: str
    timestamp_s: int
    signatures: list[str]
    body: dict[str, Any]


class WebhookReceiver:
    """An aiohttp server on a fixed loopback port; `url` is the callback URL to configure."""

    def __init__(self, secrets: list[str]) -> None:
        self.secrets = list(secrets)
        self.port = free_port()
        self.answer_status: int | None = None  # answer this instead of 204 (after verifying)
        self.answer_headers: dict[str, str] = {}
        self.raw = 0  # every request that reached it
        self.rejected: list[str] = []  # why each refused request was refused
        self.received: list[Received] = []  # verified requests answered 2xx
        self.refused_verified = 0  # verified requests answered with `answer_status`
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/callbacks/pushgw"

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/callbacks/pushgw", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        """Go down: connections are refused until `start` again."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.raw += 1
        body = await request.read()
        problem = verify(request.headers, body, self.secrets)
        if problem is not None:
            self.rejected.append(problem)
            return web.json_response({"error": problem}, status=401)
        if self.answer_status is not None:
            self.refused_verified += 1
            return web.Response(status=self.answer_status, headers=self.answer_headers)
        headers = request.headers
        self.received.append(
            Received(
                webhook_id=headers["webhook-id"],
                timestamp_s=int(headers["webhook-timestamp"]),
                signatures=headers["webhook-signature"].split(" "),
                body=orjson.loads(body),
            )
        )
        return web.Response(status=204)

    def unique(self) -> dict[str, Received]:
        """Verified notices after deduplication by webhook-id (what a receiver acts on)."""
        return {item.webhook_id: item for item in self.received}

    def of_event(self, event_id: str) -> list[Received]:
        """Verified notices about one event, deduplicated."""
        return [item for item in self.unique().values() if item.body["data"]["event_id"] == event_id]

    def doubled(self) -> int:
        """Verified deliveries beyond the first of each webhook-id."""
        return sum(count - 1 for count in Counter(item.webhook_id for item in self.received).values())
