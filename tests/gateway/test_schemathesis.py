"""schemathesis against a real `pushgw gateway` process: requests generated from its own /openapi.json (valid
ones and ones that break the schema), signed like core banking's, never get a 5xx, and every answer matches
the document (status code, content type, headers, body schema).

schemathesis' public Python API (`schemathesis.openapi.from_url`, `as_strategy`, `Case.call`,
`Case.validate_response`) runs inside the test, under hypothesis' `given`: the gateway is a fixture, and its
pytest plugin (`-p no:schemathesis`, which would wrap every test of the suite) stays off. Each request is
signed by a `requests` auth hook, which runs once the body is encoded: the signature covers the exact bytes
sent. The number of examples is bounded so the test stays well under a minute.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.core import signing
from gateway.core.local_servers import free_port
from tests.support import KEY_ID, SECRET, RedisServer
from tests.workers.flows import PUSHGW, pushgw_env

pytestmark = pytest.mark.e2e

EXAMPLES = 250
_PREFERENCES = "/v1/customers/{customer_id}/preferences"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def gateway_url(redis_server: RedisServer) -> Iterator[str]:
    """A `pushgw gateway` process on a free port (WeChat callback token set, so that route is live), over
    an emptied Redis with its data epoch."""
    redis_server.fresh()
    port = free_port()
    env = pushgw_env(
        redis_server.url,
        PUSHGW_API_KEYS=f"{KEY_ID}:{SECRET}",
        PUSHGW_WECHAT_CALLBACK_TOKEN="fuzz-callback-token",  # noqa: S106 - a fixture token
        PUSHGW_LOG_LEVEL="WARNING",
    )
    process = subprocess.Popen(
        [PUSHGW, "gateway", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, "the gateway process exited"
            try:
                if requests.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the gateway did not get ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Signed(requests.auth.AuthBase):
    """Core banking's RFC 9421 signature, added to the prepared request: over the exact bytes and target
    that go out (requests applies auth after it has encoded the body), with a new nonce per request."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else body
        assert isinstance(raw, bytes), "a streamed body cannot be signed"
        request.headers.setdefault("Content-Type", "application/json")  # a chosen one (even wrong) stays
        request.headers.update(
            signing.signed_headers(KEY_ID, SECRET, str(request.method), request.path_url, raw)
        )
        return request


def test_the_running_gateway_answers_as_its_openapi_document_says(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(gateway_url + "/openapi.json")
    operations = [schema[path][method] for path in schema for method in schema[path]]  # each one readable
    strategy = st.one_of([schema.as_strategy(generation_mode=mode) for mode in GenerationMode])
    answered: Counter[tuple[str, int]] = Counter()  # (the operation's path, status)

    @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def conforms(case: schemathesis.Case[Any]) -> None:
        response = case.call(base_url=gateway_url, session=session, auth=_Signed(), timeout=10)
        answered[case.operation.path, response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    with requests.Session() as session:
        conforms()
    statuses = {status for _, status in answered}
    assert not any(status >= 500 for status in statuses), answered
    assert len(operations) >= 15 and answered.total() >= EXAMPLES // 2
    signed = Counter({key: count for key, count in answered.items() if key[0].startswith("/v1/")})
    assert not [key for key in signed if key[1] == 401], signed  # every request was signed right
    assert any(200 <= status < 300 for _, status in signed), signed  # and valid ones got through
    assert any(400 <= status < 500 for _, status in signed), signed  # broken ones were refused


_PREFERENCES_PATH = "/v1/customers/C-doc/preferences"


def test_the_preferences_answer_matches_the_document(gateway_url: str) -> None:
    schema = schemathesis.openapi.from_url(gateway_url + "/openapi.json")
    response = requests.get(gateway_url + _PREFERENCES_PATH, auth=_Signed(), timeout=10)
    assert response.status_code == 200
    schema[_PREFERENCES]["GET"].validate_response(response)
