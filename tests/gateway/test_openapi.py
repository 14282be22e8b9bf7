"""/openapi.json is true: the same routes and methods as the app, and the status codes the app answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.app import create_app
from gateway.core.settings import RateLimit
from gateway.openapi import document
from tests.conftest import Stack
from tests.gateway.helpers import send
from tests.support import make_event

pytestmark = pytest.mark.e2e

_METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}
_PREFS = "/v1/customers/{customer_id}/preferences"
_TIMELINE = "/v1/customers/{customer_id}/events"
_CUSTOMER = "/v1/customers/{customer_id}"
_BATCH = "/v1/bindings/batch"


def app_routes(settings_for: Callable[..., Any]) -> set[tuple[str, str]]:
    app = create_app(settings_for())
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        found.add((resource.canonical, route.method.lower()))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in _METHODS}


async def test_the_served_document_is_the_documented_one(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0)
    answer = await send(stack.session, stack.client.url, "GET", "/openapi.json", headers={})
    assert answer.status == 200
    assert answer.body["openapi"].startswith("3.")
    assert answer.body["paths"] == document()["paths"]


def test_every_route_is_documented_and_every_documented_route_exists(
    settings_for: Callable[..., Any],
) -> None:
    assert app_routes(settings_for) == documented(document())


def test_every_schema_reference_resolves() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if "$ref" in node else []
            return own + [r for value in node.values() for r in refs(value)]
        if isinstance(node, list):
            return [r for value in node for r in refs(value)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


async def test_the_answers_of_every_route_are_documented(stack_for: Callable[..., Any]) -> None:
    stack: Stack = await stack_for(workers=0, rate_limit=RateLimit(1, 60), rate_policy="reject")
    url, session = stack.client.url, stack.session
    event = make_event(customer_id="C-doc")
    calls: list[tuple[str, str, str, Any, dict[str, Any]]] = [
        ("post", "/v1/events", "/v1/events", event, {}),
        ("post", "/v1/events", "/v1/events", event, {}),
        ("post", "/v1/events", "/v1/events", make_event(customer_id="C-doc"), {}),
        ("post", "/v1/events", "/v1/events", make_event(amount="x"), {}),
        ("post", "/v1/events", "/v1/events", None, {"raw": b"{"}),
        (
            "post",
            "/v1/events",
            "/v1/events",
            None,
            {"raw": b"{}", "headers": {"Content-Type": "application/json"}},
        ),
        ("post", "/v1/events", "/v1/events", None, {"raw": b" " * 20000}),
        ("post", "/v1/events", "/v1/events", None, {"raw": b"{}", "headers": {"Content-Type": "text/plain"}}),
        ("post", "/v1/events/batch", "/v1/events/batch", {"events": [make_event()]}, {}),
        ("post", "/v1/events/batch", "/v1/events/batch", {"events": []}, {}),
        ("post", "/v1/events/batch", "/v1/events/batch", {"events": [make_event()] * 501}, {}),
        ("get", "/v1/events/{event_id}", f"/v1/events/{event['event_id']}", None, {}),
        ("get", "/v1/events/{event_id}", "/v1/events/nope", None, {}),
        ("get", "/v1/events/{event_id}", "/v1/events/-bad", None, {}),
        ("post", _BATCH, _BATCH, {"bindings": [{"customer_id": "C-doc", "openid": "oUser_doc001"}]}, {}),
        ("post", _BATCH, _BATCH, {"bindings": []}, {}),
        (
            "post",
            _BATCH,
            _BATCH,
            {"bindings": [{"customer_id": "C-doc", "openid": "oUser_doc001"}] * 501},
            {},
        ),
        ("put", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", {"openid": "oUser_doc001"}, {}),
        ("put", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", {"openid": "x"}, {}),
        ("get", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", None, {}),
        ("get", "/v1/bindings/{customer_id}", "/v1/bindings/-bad", None, {}),
        ("delete", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", None, {}),
        ("delete", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", None, {}),
        ("get", "/v1/bindings/{customer_id}", "/v1/bindings/C-doc", None, {}),
        ("put", _PREFS, "/v1/customers/C-doc/preferences", {"muted_types": ["refund"]}, {}),
        ("put", _PREFS, "/v1/customers/C-doc/preferences", {"quiet_hours": {"start": "1"}}, {}),
        ("get", _PREFS, "/v1/customers/C-doc/preferences", None, {}),
        ("get", _PREFS, "/v1/customers/-bad/preferences", None, {}),
        ("get", _TIMELINE, "/v1/customers/C-doc/events?limit=5", None, {}),
        ("get", _TIMELINE, "/v1/customers/C-doc/events?since=yesterday", None, {}),
        ("delete", _CUSTOMER, "/v1/customers/C-doc", None, {}),
        ("delete", _CUSTOMER, "/v1/customers/C-doc", None, {}),
        ("delete", _CUSTOMER, "/v1/customers/-bad", None, {}),
        ("get", "/wechat/callback", "/wechat/callback?signature=x&timestamp=1&nonce=n&echostr=e", None, {}),
        ("post", "/wechat/callback", "/wechat/callback?signature=x", None, {"raw": b"<xml/>"}),
        ("get", "/healthz", "/healthz", None, {}),
        ("get", "/readyz", "/readyz", None, {}),
        ("get", "/metrics", "/metrics", None, {}),
        ("get", "/openapi.json", "/openapi.json", None, {}),
    ]
    paths = document()["paths"]
    seen: dict[tuple[str, str], set[str]] = {}
    for method, template, path, data, kwargs in calls:
        if method == "get" and path == "/metrics":
            async with session.get(url + path) as response:
                status = response.status
        else:
            status = (await send(session, url, method.upper(), path, data, **kwargs)).status
        seen.setdefault((template, method), set()).add(str(status))
        assert str(status) in paths[template][method]["responses"], (method, path, status)
    assert set(seen) == documented(document()), "every route was called"
    assert seen[("/v1/events", "post")] == {"202", "200", "429", "422", "400", "401", "413", "415"}
