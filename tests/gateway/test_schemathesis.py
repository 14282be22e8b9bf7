"""schemathesis against a real `pushgw gateway` process: requests generated from its own /openapi.json (valid
ones and ones that break the schema), signed like core banking's, never get a 5xx, and every answer matches
the document (status code, content type, headers, body schema).

schemathesis' pytest plugin is disabled (`-p no:schemathesis`: it warns on load under filterwarnings=error),
so its Python API runs inside the test, with its own warnings silenced there only. The number of examples
is bounded so the test stays well under a minute.
"""

from __future__ import annotations

import subprocess
import time
import warnings
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture.utils import _calc_p_continue

from tests.gateway.helpers import fresh_headers
from tests.support import KEY_ID, SECRET, RedisServer, free_port, signed_headers
from tests.workers.flows import PUSHGW, pushgw_env

pytestmark = pytest.mark.e2e

EXAMPLES = 250
_PREFERENCES = "/v1/customers/{customer_id}/preferences"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


@pytest.fixture
def gateway_url(redis_server: RedisServer) -> Iterator[str]:
    """A `pushgw gateway` process on a free port (WeChat callback token set, so that route is live)."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
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


class _LegacyMany:
    """The `many()` collection helper as hypothesis-jsonschema 0.23 calls it (`more()`, `reject()`): newer
    hypothesis releases replaced that interface with an iterator, which breaks its object strategies.
    Same decisions as the old helper: a geometric number of elements within the size bounds."""

    def __init__(self, data: Any, min_size: int, max_size: float, average_size: float) -> None:
        self.data, self.min_size, self.max_size = data, min_size, max_size
        self.p_continue = _calc_p_continue(average_size - min_size, max_size - min_size)
        self.count = 0
        self.rejections = 0
        self.force_stop = False

    def more(self) -> bool:
        forced: bool | None = None
        if self.force_stop:
            forced = False
        elif self.count < self.min_size:
            forced = True
        elif self.count >= self.max_size:
            forced = False
        if forced is None:
            should_continue = bool(self.data.draw_boolean(self.p_continue))
        else:
            should_continue = forced
        self.count += should_continue
        return should_continue

    def reject(self, why: str | None = None) -> None:
        self.count -= 1
        self.rejections += 1
        if self.rejections > max(3, 2 * self.count):
            if self.count < self.min_size:
                self.data.mark_invalid(why)
            self.force_stop = True


def _signed_call(session: requests.Session, case: Any, url: str) -> requests.Response:
    """Send the generated case with core banking's signature over the exact bytes that go out."""
    kwargs = case.as_transport_kwargs(base_url=url)
    kwargs.pop("timeout", None)
    prepared = session.prepare_request(requests.Request(**kwargs))
    body = prepared.body or b""
    raw = body.encode() if isinstance(body, str) else body
    assert isinstance(raw, bytes)
    signature = fresh_headers(raw)  # a new timestamp each time: a repeated body is not a replay
    if "Content-Type" in prepared.headers:  # what schemathesis chose stays (a wrong one must get a 415)
        signature.pop("Content-Type")
    prepared.headers.update(signature)
    return session.send(prepared, timeout=10)


def test_the_running_gateway_answers_as_its_openapi_document_says(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schemathesis 3.x and its dependencies warn about deprecations
        import hypothesis_jsonschema._from_schema as from_schema
        import schemathesis
        from schemathesis.checks import ALL_CHECKS
        from schemathesis.internal.result import Ok

        monkeypatch.setattr(from_schema, "cu", SimpleNamespace(many=_LegacyMany))

        checks = tuple(check for check in ALL_CHECKS if check.__name__ in CHECKS)
        assert len(checks) == len(CHECKS)
        schemathesis.experimental.OPEN_API_3_1.enable()  # the document is OpenAPI 3.1
        try:
            schema = schemathesis.from_uri(
                gateway_url + "/openapi.json", data_generation_methods=schemathesis.DataGenerationMethod.all()
            )
        finally:
            schemathesis.experimental.OPEN_API_3_1.disable()
        results = list(schema.get_all_operations())
        operations = [result.ok() for result in results if isinstance(result, Ok)]
        assert len(operations) == len(results), "an operation of the document could not be read"
        strategy = st.one_of([operation.as_strategy() for operation in operations])
        session = requests.Session()
        answered: dict[int, int] = {}

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=strategy)
        def conforms(case: Any) -> None:
            response = _signed_call(session, case, gateway_url)
            answered[response.status_code] = answered.get(response.status_code, 0) + 1
            case.validate_response(response, checks=checks)

        try:
            conforms()
        finally:
            session.close()
    assert not any(status >= 500 for status in answered)
    assert len(operations) >= 15 and sum(answered.values()) >= EXAMPLES // 2


def test_the_preferences_answer_matches_the_document(gateway_url: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import schemathesis

        schemathesis.experimental.OPEN_API_3_1.enable()
        try:
            schema = schemathesis.from_uri(gateway_url + "/openapi.json")
        finally:
            schemathesis.experimental.OPEN_API_3_1.disable()
        response = requests.get(
            gateway_url + "/v1/customers/C-doc/preferences", headers=signed_headers(b""), timeout=10
        )
        assert response.status_code == 200
        schema[_PREFERENCES]["GET"].validate_response(response)
