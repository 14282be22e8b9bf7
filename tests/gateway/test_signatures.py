"""Ingress signatures, RFC 9421 (the pushgw profile): what an independent client signs is accepted; a change
of any covered part is refused; one request's headers are refused on any other method or path; PUT and DELETE
replays are refused while a re-sent event is answered by dedup; key rotation, revocation and scopes."""

from __future__ import annotations

import datetime
import functools
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
import requests
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy
from redis.asyncio import Redis

from gateway.app import create_app
from gateway.auth import Caller, Scope, Target, Verifier
from gateway.core import signing
from gateway.core.errors import Forbidden, Unauthorized
from gateway.core.settings import ConfigError, Settings
from tests.conftest import Stack
from tests.gateway.helpers import Answer, assert_error, send, stream_length
from tests.support import KEY_ID, SECRET, gateway_serving, make_event, signed_headers

pytestmark = pytest.mark.e2e

NEW_KEY_ID, NEW_SECRET = "cbs-2027", "rotated-ingress-secret"
WRONG_SECRET = "not-the-secret"  # noqa: S105 - a fixture key


def library_signed(
    method: str, target: str, body: bytes, *, key_id: str = KEY_ID, secret: str = SECRET, **extra: Any
) -> dict[str, str]:
    """Headers made by the `http-message-signatures` package (PyPI), not by our code."""
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.HMAC_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key_id: secret.encode()}),
    )
    prepared = requests.Request(
        method, "http://127.0.0.1" + target, data=body or None, headers={"Content-Type": "application/json"}
    ).prepare()
    options: dict[str, Any] = {
        "label": "pushgw",
        "nonce": signing.new_nonce(),
        "include_alg": True,
        "covered_component_ids": ("@method", "@path", "@query"),
        **extra,
    }
    if body or method in signing.BODY_METHODS:
        options["body"] = body
    signer.sign(prepared, key_id=key_id, **options)
    return {name: str(value) for name, value in prepared.headers.items() if name != "Content-Length"}


@pytest.fixture
async def stack(stack_for: Callable[..., Any]) -> Stack:
    built: Stack = await stack_for(workers=0)
    return built


async def call(stack: Stack, method: str, target: str, body: bytes, headers: dict[str, str]) -> Answer:
    return await send(stack.session, stack.client.url, method, target, raw=body, headers=headers)


# --- an independent client ------------------------------------------------------------------------------


async def test_requests_signed_by_an_independent_library_are_accepted(stack: Stack, redis: Redis) -> None:
    event = make_event(customer_id="C-lib")
    body = orjson.dumps(event)
    answer = await call(stack, "POST", "/v1/events", body, library_signed("POST", "/v1/events", body))
    assert answer.status == 202, answer
    batch = orjson.dumps({"events": [make_event(customer_id="C-lib")]})
    headers = library_signed("POST", "/v1/events/batch", batch)
    assert (await call(stack, "POST", "/v1/events/batch", batch, headers)).status == 200
    binding = orjson.dumps({"openid": "oUser_library1"})
    headers = library_signed("PUT", "/v1/bindings/C-lib", binding)
    assert (await call(stack, "PUT", "/v1/bindings/C-lib", binding, headers)).status == 200
    target = f"/v1/events/{event['event_id']}"
    assert (await call(stack, "GET", target, b"", library_signed("GET", target, b""))).status == 200
    target = "/v1/customers/C-lib/events?limit=5"
    assert (await call(stack, "GET", target, b"", library_signed("GET", target, b""))).status == 200
    headers = library_signed("DELETE", "/v1/bindings/C-lib", b"")
    assert (await call(stack, "DELETE", "/v1/bindings/C-lib", b"", headers)).status == 204
    assert await stream_length(redis) == 2


async def test_more_covered_components_and_parameters_are_checked_too(stack: Stack) -> None:
    body = orjson.dumps(make_event(customer_id="C-more"))
    expires = datetime.datetime.now() + datetime.timedelta(seconds=60)
    headers = library_signed(
        "POST",
        "/v1/events",
        body,
        covered_component_ids=("content-type", "@method", "@authority", "@path", "@query"),
        expires=expires,
        tag="core-banking",
    )
    headers["Host"] = "127.0.0.1"
    assert (await call(stack, "POST", "/v1/events", body, headers)).status == 202
    body = orjson.dumps(make_event(customer_id="C-more"))
    headers = library_signed(
        "POST", "/v1/events", body, covered_component_ids=("content-type", "@method", "@path", "@query")
    )
    headers["Content-Type"] = "application/json; charset=utf-8"  # covered, so changing it is refused
    assert_error(await call(stack, "POST", "/v1/events", body, headers), 401, "unauthorized")


# --- the pen test's findings, closed ----------------------------------------------------------------------


async def test_a_get_signature_cannot_delete_another_customers_binding(stack: Stack, redis: Redis) -> None:
    await stack.client.bind("C-victim", "oUser_victim1")
    stolen = signed_headers(b"", method="GET", target="/v1/bindings/C-attacker")
    assert (await call(stack, "GET", "/v1/bindings/C-attacker", b"", stolen)).status in {200, 404}
    answer = await call(stack, "DELETE", "/v1/bindings/C-victim", b"", stolen)
    assert_error(answer, 401, "unauthorized")
    assert await redis.exists("pushgw:binding:{C-victim}")


@pytest.mark.parametrize("route", ["/v1/bindings/{}", "/v1/customers/{}/preferences"])
async def test_a_put_signed_for_one_customer_is_refused_on_another(
    stack: Stack, redis: Redis, route: str
) -> None:
    body = orjson.dumps({"openid": "oUser_attack1"} if "bindings" in route else {"muted_types": ["debit"]})
    headers = signed_headers(body, method="PUT", target=route.format("C-meant"))
    answer = await call(stack, "PUT", route.format("C-other"), body, headers)
    assert_error(answer, 401, "unauthorized")
    assert not [key async for key in redis.scan_iter(match="*C-other*")]
    assert (await call(stack, "PUT", route.format("C-meant"), body, headers)).status == 200


async def test_two_puts_of_one_body_to_two_customers_in_one_second_are_both_accepted(stack: Stack) -> None:
    body = orjson.dumps({"muted_types": ["refund"]})
    now = int(time.time())
    for customer in ("C-same1", "C-same2"):
        target = f"/v1/customers/{customer}/preferences"
        headers = signed_headers(body, method="PUT", target=target, at_s=now)
        assert (await call(stack, "PUT", target, body, headers)).status == 200


async def test_a_replayed_binding_change_or_delete_is_401(stack: Stack, redis: Redis) -> None:
    body = orjson.dumps({"openid": "oUser_replay1"})
    put = signed_headers(body, method="PUT", target="/v1/bindings/C-r")
    assert (await call(stack, "PUT", "/v1/bindings/C-r", body, put)).status == 200
    await redis.delete("pushgw:binding:{C-r}")
    assert_error(await call(stack, "PUT", "/v1/bindings/C-r", body, put), 401, "unauthorized")
    assert not await redis.exists("pushgw:binding:{C-r}")
    await stack.client.bind("C-r", "oUser_replay2")
    delete = signed_headers(b"", method="DELETE", target="/v1/bindings/C-r")
    assert (await call(stack, "DELETE", "/v1/bindings/C-r", b"", delete)).status == 204
    await stack.client.bind("C-r", "oUser_replay3")  # the customer binds again
    assert_error(await call(stack, "DELETE", "/v1/bindings/C-r", b"", delete), 401, "unauthorized")
    assert await redis.exists("pushgw:binding:{C-r}")


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch"])
async def test_a_byte_identical_re_sent_ingest_request_is_a_duplicate_not_401(
    stack: Stack, redis: Redis, path: str
) -> None:
    event = make_event(customer_id="C-again")
    body = orjson.dumps(event if path == "/v1/events" else {"events": [event]})
    headers = signed_headers(body, target=path)
    first = await call(stack, "POST", path, body, headers)
    again = await call(stack, "POST", path, body, headers)
    assert first.status in {200, 202}, first
    assert again.status == 200, again
    status = again.body["status"] if path == "/v1/events" else again.body["results"][0]["status"]
    assert status == "duplicate"
    assert await stream_length(redis) == 1


@pytest.mark.parametrize("skew_s", [-301, 301, -3600, 10**9])
async def test_created_outside_the_window_is_401(stack: Stack, redis: Redis, skew_s: int) -> None:
    body = orjson.dumps(make_event())
    answer = await call(
        stack, "POST", "/v1/events", body, signed_headers(body, at_s=int(time.time()) + skew_s)
    )
    assert_error(answer, 401, "unauthorized")
    assert await stream_length(redis) == 0


@pytest.mark.parametrize("skew_s", [-250, 250])
async def test_created_inside_the_window_is_accepted(stack: Stack, skew_s: int) -> None:
    body = orjson.dumps(make_event(customer_id=f"C-skew{skew_s}"))
    headers = signed_headers(body, at_s=int(time.time()) + skew_s)
    assert (await call(stack, "POST", "/v1/events", body, headers)).status == 202


# --- keys: rotation, revocation, scopes, open mode -----------------------------------------------------


async def test_two_live_keys_during_rotation_are_both_accepted(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET})
    old = orjson.dumps(make_event(customer_id="C-old"))
    new = orjson.dumps(make_event(customer_id="C-new"))
    assert (await call(stack, "POST", "/v1/events", old, signed_headers(old))).status == 202
    headers = signed_headers(new, key_id=NEW_KEY_ID, secret=NEW_SECRET)
    assert (await call(stack, "POST", "/v1/events", new, headers)).status == 202
    crossed = orjson.dumps(make_event(customer_id="C-crossed"))
    headers = signed_headers(crossed, key_id=NEW_KEY_ID, secret=SECRET)
    assert_error(await call(stack, "POST", "/v1/events", crossed, headers), 401, "unauthorized")
    assert await stream_length(redis) == 2


async def test_a_revoked_key_is_refused_at_once_and_put_replays_are_refused_by_every_gateway(
    stack_for: Callable[..., Any], settings_for: Callable[..., Settings], redis: Redis
) -> None:
    """Rotation ends: a gateway restarts with the old key removed. A request signed with it a moment ago is
    refused; the new key goes on working; a PUT one gateway accepted is refused by another (the nonce memory
    is in Redis, not in a process)."""
    stack: Stack = await stack_for(workers=0, api_keys={KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET})
    signed_before = orjson.dumps(make_event(customer_id="C-rot2"))
    signed_before_headers = signed_headers(signed_before)
    restarted = await gateway_serving(settings_for(api_keys={NEW_KEY_ID: NEW_SECRET})).start()
    try:
        to_restarted = stack.client.url
        stack.client.url = restarted.url
        answer = await call(stack, "POST", "/v1/events", signed_before, signed_before_headers)
        assert_error(answer, 401, "unauthorized")
        body = orjson.dumps({"openid": "oUser_rotation"})
        put = signed_headers(
            body, method="PUT", target="/v1/bindings/C-rot", key_id=NEW_KEY_ID, secret=NEW_SECRET
        )
        assert (await call(stack, "PUT", "/v1/bindings/C-rot", body, put)).status == 200
        stack.client.url = to_restarted
        assert_error(await call(stack, "PUT", "/v1/bindings/C-rot", body, put), 401, "unauthorized")
    finally:
        await restarted.stop()
    assert await stream_length(redis) == 0


async def test_a_key_without_the_routes_scope_is_403(stack_for: Callable[..., Any], redis: Redis) -> None:
    stack: Stack = await stack_for(
        workers=0, api_keys={KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET}, api_key_scopes={NEW_KEY_ID: {"events"}}
    )
    scoped = functools.partial(signed_headers, key_id=NEW_KEY_ID, secret=NEW_SECRET)
    body = orjson.dumps(make_event(customer_id="C-scope"))
    assert (await call(stack, "POST", "/v1/events", body, scoped(body))).status == 202
    binding = orjson.dumps({"openid": "oUser_scope1"})
    headers = scoped(binding, method="PUT", target="/v1/bindings/C-scope")
    assert_error(await call(stack, "PUT", "/v1/bindings/C-scope", binding, headers), 403, "forbidden")
    headers = scoped(b"", method="GET", target="/v1/customers/C-scope/events")
    assert_error(await call(stack, "GET", "/v1/customers/C-scope/events", b"", headers), 403, "forbidden")
    assert not await redis.exists("pushgw:binding:{C-scope}")
    await stack.client.bind("C-scope", "oUser_scope2")  # the unscoped key may call everything


def test_scopes_must_name_known_scopes_and_keys(settings_for: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="PUSHGW_API_KEY_SCOPES"):
        Settings.from_env({"PUSHGW_API_KEYS": "cbs:s", "PUSHGW_API_KEY_SCOPES": "cbs=events+admin"})
    with pytest.raises(ConfigError, match="PUSHGW_API_KEY_SCOPES"):
        Settings.from_env({"PUSHGW_API_KEYS": "cbs:s", "PUSHGW_API_KEY_SCOPES": "other=events"})
    with pytest.raises(ConfigError, match="PUSHGW_API_KEYS"):
        Settings.from_env({"PUSHGW_API_KEYS": 'c"bs:s'})


async def test_the_gateway_refuses_to_start_without_keys(settings_for: Callable[..., Any]) -> None:
    with pytest.raises(ConfigError, match="PUSHGW_API_KEYS"):
        create_app(settings_for(api_keys={}))


async def test_open_ingress_accepts_unsigned_requests_but_checks_a_signature_sent(
    stack_for: Callable[..., Any], redis: Redis
) -> None:
    stack: Stack = await stack_for(workers=0, open_ingress=True)
    event = make_event()
    body = orjson.dumps(event)
    answer = await call(stack, "POST", "/v1/events", body, {"Content-Type": "application/json"})
    assert (answer.status, answer.body) == (202, {"event_id": event["event_id"], "status": "queued"})
    lookup = await send(stack.session, stack.client.url, "GET", f"/v1/events/{event['event_id']}", headers={})
    assert lookup.status == 200 and lookup.body["status"] == "queued"
    other = orjson.dumps(make_event())
    headers = signed_headers(other, secret=WRONG_SECRET)
    assert_error(await call(stack, "POST", "/v1/events", other, headers), 401, "unauthorized")
    assert await stream_length(redis) == 1


# --- properties of the Verifier (no server) ----------------------------------------------------------------

WINDOW_S = 300
NOW_S = 1_790_000_000
BODY = b'{"event_id":"E1"}'


def _verifier(**scopes: frozenset[str]) -> Verifier:
    return Verifier({KEY_ID: SECRET, NEW_KEY_ID: NEW_SECRET}, scopes, WINDOW_S, open_ingress=False)


def _target(method: str, raw_path: str, headers: dict[str, str]) -> Target:
    return Target(method, raw_path, "http", "127.0.0.1:8080", CIMultiDictProxy(CIMultiDict(headers)))


def _verify(
    method: str, raw_path: str, headers: dict[str, str], body: bytes, scope: Scope = Scope.EVENTS
) -> Caller:
    return _verifier().verify(_target(method, raw_path, headers), body, scope, NOW_S)


def _signed(
    method: str = "POST", target: str = "/v1/events", body: bytes = BODY, **options: Any
) -> dict[str, str]:
    return signing.signed_headers(KEY_ID, SECRET, method, target, body, created_s=NOW_S, **options)


def test_a_signed_request_verifies_and_names_its_key_and_nonce() -> None:
    headers = _signed(nonce="nonce-0123456789abcdef")
    assert _verify("POST", "/v1/events", headers, BODY) == Caller(KEY_ID, "nonce-0123456789abcdef")


def _replace_param(headers: dict[str, str], name: str, value: str) -> dict[str, str]:
    params = headers["Signature-Input"].split(";")
    changed = [f"{name}={value}" if part.startswith(f"{name}=") else part for part in params]
    return {**headers, "Signature-Input": ";".join(changed)}


MUTATIONS: dict[str, Callable[[str, str, dict[str, str], bytes], tuple[str, str, dict[str, str], bytes]]] = {
    "method": lambda m, p, h, b: ("PUT" if m != "PUT" else "POST", p, h, b),
    "path": lambda m, p, h, b: (m, p.replace("/v1/", "/v1//", 1), h, b),
    "other-path": lambda m, p, h, b: (m, "/v1/bindings/C-other", h, b),
    "query": lambda m, p, h, b: (m, p + ("&" if "?" in p else "?") + "x=1", h, b),
    "body": lambda m, p, h, b: (m, p, h, b + b" "),
    "digest": lambda m, p, h, b: (m, p, {**h, "Content-Digest": signing.content_digest(b + b"!")}, b + b"!"),
    "created": lambda m, p, h, b: (m, p, _replace_param(h, "created", str(NOW_S - 1)), b),
    "keyid": lambda m, p, h, b: (m, p, _replace_param(h, "keyid", f'"{NEW_KEY_ID}"'), b),
    "nonce": lambda m, p, h, b: (m, p, _replace_param(h, "nonce", '"another-nonce-0000000"'), b),
    "label": lambda m, p, h, b: (
        m,
        p,
        {
            **h,
            "Signature": h["Signature"].replace("pushgw=", "other="),
            "Signature-Input": h["Signature-Input"],
        },
        b,
    ),
    "no-digest-covered": lambda m, p, h, b: (
        m,
        p,
        {**h, "Signature-Input": h["Signature-Input"].replace(' "content-digest"', "")},
        b,
    ),
    "drop-query-component": lambda m, p, h, b: (
        m,
        p,
        {**h, "Signature-Input": h["Signature-Input"].replace(' "@query"', "")},
        b,
    ),
}


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["POST", "PUT"]),
    path=st.sampled_from(
        ["/v1/events", "/v1/events/batch", "/v1/bindings/C-1", "/v1/customers/C-1/preferences"]
    ),
    query=st.sampled_from(["", "?since=2026-11-22T10:00:00%2B08:00", "?limit=5&x=%20"]),
    body=st.binary(min_size=0, max_size=64),
    mutation=st.sampled_from(sorted(MUTATIONS)),
)
def test_changing_any_covered_part_is_refused(
    method: str, path: str, query: str, body: bytes, mutation: str
) -> None:
    target = path + query
    headers = _signed(method, target, body)
    assert _verify(method, target, headers, body).source == KEY_ID
    changed = MUTATIONS[mutation](method, target, headers, body)
    with pytest.raises(Unauthorized) as refused:
        _verify(*changed)
    assert refused.value.message == "missing or invalid request signature"  # never says which part


@settings(max_examples=100, deadline=None)
@given(
    signed=st.tuples(
        st.sampled_from(["GET", "DELETE"]), st.sampled_from(["/v1/bindings/A", "/v1/events/E1"])
    ),
    used=st.tuples(
        st.sampled_from(["GET", "DELETE", "PUT", "POST"]),
        st.sampled_from(["/v1/bindings/A", "/v1/bindings/B", "/v1/events/E1", "/v1/customers/A/events"]),
    ),
)
def test_one_requests_headers_are_refused_on_any_other_method_or_path(
    signed: tuple[str, str], used: tuple[str, str]
) -> None:
    headers = _signed(signed[0], signed[1], b"")
    if used == signed:
        assert _verify(*used, headers, b"").source == KEY_ID
        return
    with pytest.raises(Unauthorized):
        _verify(*used, headers, b"")


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda h: {k: v for k, v in h.items() if k != "Signature"}, id="no-signature"),
        pytest.param(lambda h: {k: v for k, v in h.items() if k != "Signature-Input"}, id="no-input"),
        pytest.param(lambda h: {k: v for k, v in h.items() if k != "Content-Digest"}, id="no-digest"),
        pytest.param(lambda h: _replace_param(h, "nonce", '"short"'), id="nonce-too-short"),
        pytest.param(lambda h: _replace_param(h, "nonce", '"' + "n" * 65 + '"'), id="nonce-too-long"),
        pytest.param(lambda h: _replace_param(h, "nonce", '"nonce with spaces 0000"'), id="nonce-charset"),
        pytest.param(lambda h: _replace_param(h, "created", "12.5"), id="created-decimal"),
        pytest.param(lambda h: _replace_param(h, "created", '"1790000000"'), id="created-string"),
        pytest.param(lambda h: _replace_param(h, "keyid", "cbs"), id="keyid-token"),
        pytest.param(lambda h: _replace_param(h, "keyid", '"nobody"'), id="unknown-keyid"),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"] + ';alg="hmac-sha512"'}, id="alg"
        ),
        pytest.param(lambda h: {**h, "Signature-Input": h["Signature-Input"] + ";expires=1"}, id="expired"),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"] + ";colour=1"}, id="unknown-param"
        ),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"] + ";created=1"}, id="repeated-param"
        ),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('"@query"', '"@query";sf')},
            id="component-param",
        ),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('"@path"', '"@path" "@path"')},
            id="repeated-component",
        ),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace('"@path"', '"x-absent"')},
            id="absent-header-covered",
        ),
        pytest.param(lambda h: {**h, "Signature": "pushgw=:" + "A" * 43 + "=:"}, id="wrong-mac"),
        pytest.param(lambda h: {**h, "Signature": "pushgw=:not base64!:"}, id="not-base64"),
        pytest.param(lambda h: {**h, "Signature": "pushgw=" + h["Signature"][7:].upper()}, id="mac-case"),
        pytest.param(lambda h: {**h, "Signature": h["Signature"] + ", pushgw=:AAAA:"}, id="repeated-label"),
        pytest.param(lambda h: {**h, "Signature-Input": "é" + h["Signature-Input"]}, id="non-ascii"),
        pytest.param(lambda h: {**h, "Signature-Input": h["Signature-Input"] + ","}, id="trailing-comma"),
        pytest.param(
            lambda h: {**h, "Signature-Input": h["Signature-Input"].replace("pushgw=", "a=") + ", b=()"},
            id="two-labels-neither-pushgw",
        ),
        pytest.param(lambda h: {**h, "Content-Digest": "sha-512=:AAAA:"}, id="digest-other-algorithm-only"),
        pytest.param(lambda h: {**h, "Signature-Input": "pushgw=(" + " " * 8000 + "x"}, id="spaces"),
    ],
)
def test_malformed_or_incomplete_signatures_are_refused(
    change: Callable[[dict[str, str]], dict[str, str]],
) -> None:
    with pytest.raises(Unauthorized):
        _verify("POST", "/v1/events", change(_signed()), BODY)


def test_the_pushgw_label_is_chosen_among_several_signatures() -> None:
    headers = _signed()
    headers["Signature-Input"] = (
        'proxy=("@method");created=1;keyid="p";nonce="pppppppppppppppp", ' + headers["Signature-Input"]
    )
    headers["Signature"] = "proxy=:AAAA:, " + headers["Signature"]
    assert _verify("POST", "/v1/events", headers, BODY).source == KEY_ID


def test_a_key_without_the_scope_is_forbidden_only_after_a_valid_signature() -> None:
    verifier = _verifier(**{KEY_ID: frozenset({"events"})})
    headers = _signed("PUT", "/v1/bindings/C-1")
    with pytest.raises(Forbidden):
        verifier.verify(_target("PUT", "/v1/bindings/C-1", headers), BODY, Scope.BINDINGS, NOW_S)
    with pytest.raises(Unauthorized):
        verifier.verify(_target("PUT", "/v1/bindings/C-2", headers), BODY, Scope.BINDINGS, NOW_S)


# --- the README's worked example, byte for byte ------------------------------------------------------------


def _readme_example() -> tuple[str, dict[str, str]]:
    """The README's Python signer (its own code block) and the headers it shows."""
    readme = (__import__("pathlib").Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Worked example", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    shown = section.split("```http\n", 1)[1].split("```", 1)[0]
    headers = dict(line.split(": ", 1) for line in shown.strip().splitlines()[1:] if ": " in line)
    return code, headers


def test_the_readme_worked_example_is_exact() -> None:
    code, shown = _readme_example()
    namespace: dict[str, Any] = {}
    exec(code, namespace)  # noqa: S102 - the README's own example, checked
    example = namespace["EXAMPLE"]
    produced = namespace["sign"](*example)
    for name in ("Content-Digest", "Signature-Input", "Signature"):
        assert shown[name] == produced[name], name
    key_id, secret, method, target, body, created, nonce = example
    ours = signing.signed_headers(key_id, secret, method, target, body, created_s=created, nonce=nonce)
    assert {name: shown[name] for name in ours} == ours
    theirs = library_signed(
        method,
        target,
        body,
        key_id=key_id,
        secret=secret,
        nonce=nonce,
        include_alg=False,
        created=datetime.datetime.fromtimestamp(created),
    )
    assert {name: theirs[name] for name in ours} == ours
    verifier = Verifier({key_id: secret}, {}, WINDOW_S, open_ingress=False)
    target_parts = _target(method, target, shown)
    assert verifier.verify(target_parts, body, Scope.EVENTS, created).source == key_id
