"""Locust users that behave like core banking, one user class per scenario.

    locust -f loadtest/locustfile.py --host http://127.0.0.1:8080 SteadyUser E2EUser      # pick scenarios
    PUSHGW_LOCUST_SHAPE=step locust -f loadtest/locustfile.py --headless ...              # step ramp / spike

Scenarios (user classes): SteadyUser (mixed single/batch, duplicates, invalid payloads, status reads),
BatchBulkUser (bulk load in batches), DuplicateStormUser (the same events again and again), HotCustomerUser
(a few customers flooded: digests or 429), E2EUser (accepted -> delivered latency as request type "E2E"),
WeChatTroubleUser (turns simulator faults on and off mid-run; one per run). Tasks of SteadyUser are tagged
(single, batch, duplicate, invalid, status) for `--tags` when SteadyUser runs alone.
Settings: PUSHGW_LOCUST_* (see loadtest/policy.py and the README); requests are signed when
PUSHGW_LOCUST_SECRET is set, else unsigned (`pushgw dev` runs open ingress and knows no keys).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections import deque
from datetime import datetime
from typing import Any, ClassVar

import orjson
from locust import FastHttpUser, between, constant, events, tag, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtest import shapes
from loadtest.payloads import EventFactory, customer_id, openid_of, signed_headers
from loadtest.policy import LocustConfig, exit_verdict

log = logging.getLogger(__name__)
CONFIG = LocustConfig.from_env(os.environ)
OK_STATUSES = frozenset({"queued", "duplicate", "digested"})
FINAL_NOT_DELIVERED = frozenset({"failed", "dead_lettered", "no_binding", "suppressed"})
_user_numbers = itertools.count()

if CONFIG.shape:  # Locust runs the shape of any shape class in this module, so export one only when asked
    Shape = shapes.SHAPE_CLASSES[CONFIG.shape]


def _raw(body: bytes) -> Any:
    """The body as the exact bytes that were signed (FastHttpSession sends bytes as they are; its
    annotation says str)."""
    return body


def invalid_payload(factory: EventFactory, rnd: random.Random) -> tuple[bytes, int]:
    """A request body the gateway must refuse, and the status it must answer (422, or 400 for non-JSON)."""
    event = factory.event()
    kind = rnd.randrange(5)
    if kind == 0:
        del event["amount"]
    elif kind == 1:
        event["amount"] = 12.5  # a float, not a decimal string
    elif kind == 2:
        event["iban"] = "unknown field"
    elif kind == 3:
        event["type"] = "lottery_win"
    else:
        return b'{"event_id": "not json', 400
    return orjson.dumps(event), 422


class CoreBankingUser(FastHttpUser):
    """What every scenario shares: signed (or unsigned) posting, answer checks, an event factory."""

    abstract = True
    connection_timeout = 10.0
    network_timeout = 30.0

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.rnd = random.Random(self.number)
        self.factory = EventFactory(CONFIG.customers, seed=self.number, prefix=f"LOC{self.number:04d}")

    def headers(self, body: bytes) -> dict[str, str]:
        if CONFIG.signed:
            return signed_headers(CONFIG.key_id, CONFIG.secret, body)
        return {"Content-Type": "application/json"}

    def post_event(self, event: dict[str, Any], name: str = "/v1/events", ok: tuple[int, ...] = ()) -> str:
        """Post one event; success is 202/200 with a known status (or a status code in `ok`)."""
        body = orjson.dumps(event)
        with self.client.post(
            "/v1/events", data=_raw(body), headers=self.headers(body), name=name, catch_response=True
        ) as response:
            if response.status_code in ok:
                response.success()
                return ""
            if response.status_code not in (200, 202):
                response.failure(f"HTTP {response.status_code}")
                return ""
            status = str(orjson.loads(response.content or b"{}").get("status", ""))
            if status not in OK_STATUSES:
                response.failure(f"unexpected status {status!r}")
            return status

    def post_batch(self, size: int, name: str = "/v1/events/batch") -> None:
        body = orjson.dumps({"events": [self.factory.event() for _ in range(size)]})
        with self.client.post(
            "/v1/events/batch", data=_raw(body), headers=self.headers(body), name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return
            results = orjson.loads(response.content or b"{}").get("results", [])
            bad = [r for r in results if r.get("status") not in OK_STATUSES]
            if len(results) != size or bad:
                response.failure(f"{len(bad)} of {size} items not accepted")

    def post_invalid(self) -> None:
        body, expected = invalid_payload(self.factory, self.rnd)
        with self.client.post(
            "/v1/events",
            data=_raw(body),
            headers=self.headers(body),
            name="/v1/events [invalid]",
            catch_response=True,
        ) as response:
            if response.status_code == expected:
                response.success()  # a clear refusal is the right answer
            else:
                response.failure(f"expected {expected}, got {response.status_code}")


class SteadyUser(CoreBankingUser):
    """Steady mixed traffic: mostly single events, some batches, ~5% duplicates, ~3% invalid payloads."""

    weight = 10
    wait_time = between(0.05, 0.25)

    def on_start(self) -> None:
        super().on_start()
        self.sent: deque[tuple[dict[str, Any], int]] = deque(maxlen=200)

    @tag("single")
    @task(80)
    def single(self) -> None:
        event = self.factory.event()
        if self.post_event(event):
            self.sent.append((event, int(time.time())))

    @tag("batch")
    @task(5)
    def batch(self) -> None:
        self.post_batch(self.rnd.randint(10, 50))

    @tag("duplicate")
    @task(5)
    def duplicate(self) -> None:
        # a signature is accepted once: resend only events signed in an earlier second (core banking's retry)
        now_s = int(time.time())
        earlier = [event for event, sent_s in self.sent if sent_s < now_s]
        if earlier:
            self.post_event(self.rnd.choice(earlier), name="/v1/events [duplicate]")

    @tag("invalid")
    @task(3)
    def invalid(self) -> None:
        self.post_invalid()

    @tag("status")
    @task(7)
    def status(self) -> None:
        if self.sent:
            event_id = self.rnd.choice(self.sent)[0]["event_id"]
            self.client.get(f"/v1/events/{event_id}", headers=self.headers(b""), name="/v1/events/{id}")


class BatchBulkUser(CoreBankingUser):
    """Bulk load: batches of PUSHGW_LOCUST_BATCH events (default 100), as an end-of-day settlement run."""

    weight = 2
    wait_time = between(0.2, 1.0)
    batch_size = int(os.environ.get("PUSHGW_LOCUST_BATCH", "100"))

    @task
    def bulk(self) -> None:
        self.post_batch(self.batch_size, name=f"/v1/events/batch [{self.batch_size}]")


class DuplicateStormUser(CoreBankingUser):
    """A retry storm: each event is sent once and then re-sent up to 9 times (200 `duplicate` expected)."""

    weight = 3
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        super().on_start()
        self.storm: deque[tuple[dict[str, Any], int]] = deque(maxlen=20)

    @task
    def storm_step(self) -> None:
        now_s = int(time.time())
        ready = [item for item in self.storm if item[1] < now_s]
        if ready and self.rnd.random() < 0.9:
            event, _ = item = self.rnd.choice(ready)
            self.storm.remove(item)
            self.storm.append((event, now_s))
            self.post_event(event, name="/v1/events [duplicate storm]")
            return
        event = self.factory.event()
        if self.post_event(event):
            self.storm.append((event, now_s))


class HotCustomerUser(CoreBankingUser):
    """A few customers flooded (a card being skimmed): over the rate limit events are digested, or 429
    under PUSHGW_RATE_POLICY=reject; both are the designed answer, so both count as success."""

    weight = 2
    wait_time = constant(0.02)
    hot_customers = 5

    @task
    def flood(self) -> None:
        event = self.factory.event(customer=self.rnd.randrange(self.hot_customers))
        self.post_event(event, name="/v1/events [hot customer]", ok=(429,))


class E2EUser(CoreBankingUser):
    """Posts an event for a bound customer and polls its status until delivered; reports accepted ->
    delivered (Redis timestamps, ms) as request type "E2E", so it has percentiles in Locust's own stats."""

    weight = 2
    wait_time = between(0.5, 1.5)
    customers_per_user = 40  # rotating keeps each under the default 5/60 rate limit

    def on_start(self) -> None:
        super().on_start()
        self.customers = [f"E2E{self.number:05d}{k:03d}" for k in range(self.customers_per_user)]
        for k, customer in enumerate(self.customers):
            body = orjson.dumps({"openid": openid_of(10_000_000 + self.number * 1000 + k)})
            self.client.put(
                f"/v1/bindings/{customer}",
                data=_raw(body),
                headers=self.headers(body),
                name="/v1/bindings/{id}",
            )
        self.turn = itertools.cycle(self.customers)

    @task
    def deliver_one(self) -> None:
        event = self.factory.event()
        event["customer_id"] = next(self.turn)
        if self.post_event(event, name="/v1/events [e2e]") != "queued":
            return
        started = time.monotonic()
        deadline = started + CONFIG.e2e_timeout_s
        while time.monotonic() < deadline:
            time.sleep(0.05)
            record = self._status(event["event_id"])
            status = record.get("status")
            if status == "delivered":
                self._fire(_elapsed_ms(record) or (time.monotonic() - started) * 1000, None)
                return
            if status in FINAL_NOT_DELIVERED:
                self._fire((time.monotonic() - started) * 1000, RuntimeError(f"ended {status}"))
                return
        self._fire(CONFIG.e2e_timeout_s * 1000, TimeoutError(f"not delivered in {CONFIG.e2e_timeout_s} s"))

    def _status(self, event_id: str) -> dict[str, Any]:
        with self.client.get(
            f"/v1/events/{event_id}",
            headers=self.headers(b""),
            name="/v1/events/{id} [e2e poll]",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
                return {}
            record: dict[str, Any] = orjson.loads(response.content or b"{}")
            return record

    def _fire(self, response_time_ms: float, exception: Exception | None) -> None:
        self.environment.events.request.fire(
            request_type="E2E",
            name="accepted->delivered",
            response_time=response_time_ms,
            response_length=0,
            exception=exception,
            context={},
        )


def _elapsed_ms(record: dict[str, Any]) -> float | None:
    accepted, delivered = record.get("accepted_at"), record.get("delivered_at")
    if not accepted or not delivered:
        return None
    return (datetime.fromisoformat(delivered) - datetime.fromisoformat(accepted)).total_seconds() * 1000


class WeChatTroubleUser(CoreBankingUser):
    """WeChat trouble mid-run: after PUSHGW_LOCUST_FAULT_AFTER_S (10) the simulator answers
    PUSHGW_LOCUST_FAULTS (default 30% errcode -1, busy) for PUSHGW_LOCUST_FAULT_FOR_S (15), then recovers;
    repeated. Run it beside SteadyUser and E2EUser: retries show up as E2E latency, not as lost events."""

    fixed_count = 1
    wait_time = constant(0)
    faults: ClassVar[bytes] = os.environ.get(
        "PUSHGW_LOCUST_FAULTS", '{"errcode_rates": {"-1": 0.3}}'
    ).encode()
    after_s = float(os.environ.get("PUSHGW_LOCUST_FAULT_AFTER_S", "10"))
    for_s = float(os.environ.get("PUSHGW_LOCUST_FAULT_FOR_S", "15"))

    @task
    def trouble(self) -> None:
        time.sleep(self.after_s)
        self._faults(self.faults, "faults on")
        time.sleep(self.for_s)
        self._faults(b"{}", "faults off")

    def on_stop(self) -> None:
        self._faults(b"{}", "faults off")

    def _faults(self, body: bytes, name: str) -> None:
        self.client.put(
            f"{CONFIG.sim_url}/sim/faults",
            data=_raw(body),
            headers={"Content-Type": "application/json"},
            name=name,
        )


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _announce(environment: Environment, **_: Any) -> None:
    """Announce how requests are sent; the locustfile's users never depend on this to run."""
    if not isinstance(environment.runner, WorkerRunner):
        mode = f"signed as {CONFIG.key_id!r}" if CONFIG.signed else "unsigned (open ingress)"
        log.info("pushgw locustfile: requests %s; shape %s", mode, CONFIG.shape or "none (-u/-r)")


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _bind_customers(environment: Environment, **_: Any) -> None:
    """Bind the head of the skewed customer distribution, so most events are really delivered."""
    if isinstance(environment.runner, WorkerRunner) or not environment.host:
        return
    count = int(os.environ.get("PUSHGW_LOCUST_BIND_CUSTOMERS", "200"))
    import urllib.request

    for index in range(min(count, CONFIG.customers)):
        body = orjson.dumps({"openid": openid_of(index)})
        headers = signed_headers(CONFIG.key_id, CONFIG.secret, body) if CONFIG.signed else {}
        request = urllib.request.Request(  # noqa: S310 - the --host the operator gave
            f"{environment.host}/v1/bindings/{customer_id(index)}",
            data=_raw(body),
            method="PUT",
            headers={**headers, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5):  # noqa: S310
                pass
        except OSError as exc:
            log.warning("binding customers failed (%s); events will end as no_binding", exc)
            return


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _exit_code_policy(environment: Environment, **_: Any) -> None:
    """Exit 1 when the failure ratio or p99 is over PUSHGW_LOCUST_MAX_FAILURE_RATIO / _MAX_P99_MS."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    p99_ms = total.get_response_time_percentile(0.99) if total.num_requests else None
    code, reasons = exit_verdict(total.fail_ratio, p99_ms, CONFIG.max_failure_ratio, CONFIG.max_p99_ms)
    if code:
        log.error("load test failed its thresholds: %s", "; ".join(reasons))
        environment.process_exit_code = code
