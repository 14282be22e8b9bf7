"""Locust users that behave like core banking, one user class per scenario.

    locust -f loadtest/locustfile.py                                      # web UI with the class picker
    locust -f loadtest/locustfile.py --headless -u 20 -t 2m SteadyUser E2EUser    # scenarios by name
    PUSHGW_LOCUST_SHAPE=step locust -f loadtest/locustfile.py --headless ...      # step ramp / spike

(locust.conf at the repository root turns the class picker on and names this file and the local gateway.)
Scenarios (user classes): SteadyUser (mixed single/batch, duplicates, invalid payloads, status reads),
BatchBulkUser (bulk load in batches), DuplicateStormUser (the same events again and again), HotCustomerUser
(a few customers flooded: digests or 429), E2EUser (accepted -> delivered latency as request type "E2E"),
WeChatTroubleUser (turns simulator faults on and off mid-run): fault injection is opt-in, so it runs only when
named on the command line or with PUSHGW_LOCUST_INJECT_FAULTS=1 (which also lists it in the class picker).
Customers: events are drawn uniformly from a pool sized at test start from the planned event rate, so that the
per-customer rate limit (PUSHGW_RATE_LIMIT, 5/60) admits 5 times that rate, and bound before the users start:
the run measures deliveries, not digests (policy.pool_size).
Outcomes: what became of each event (queued, duplicate, digested, suppressed, rejected, rate_limited,
unavailable, error) is counted in rows of request type "outcome", kept out of the aggregated totals.
Tags: each task is tagged (SteadyUser: single, batch, duplicate, invalid, status; the others by scenario); a
class that --tags / --exclude-tags leave without a task is not spawned.
Exit code: loadtest/policy.py's policy (failure ratio, p99, exceptions), printed with its figures at the end,
pass or fail. Settings: PUSHGW_LOCUST_* (see loadtest/policy.py and the README); requests are signed when
PUSHGW_LOCUST_SECRET is set, else unsigned (`pushgw dev` runs open ingress and knows no keys).
"""

from __future__ import annotations

import itertools
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar

import gevent.pool
import orjson
from geventhttpclient import HTTPClient
from locust import FastHttpUser, User, between, constant, constant_throughput, events, tag, task
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadtest import shapes
from loadtest.payloads import EventFactory, customer_id, openid_of, signed_headers
from loadtest.policy import (
    ACCEPTED,
    MIN_CUSTOMERS,
    LocustConfig,
    Stage,
    Verdict,
    exit_verdict,
    outcome_of,
    pool_size,
    users_per_class,
)

log = logging.getLogger(__name__)
CONFIG = LocustConfig.from_env(os.environ)
FINAL_NOT_DELIVERED = frozenset({"failed", "dead_lettered", "no_binding", "suppressed"})
OUTCOME = "outcome"  # the request type of the per-event outcome rows
POOL_MESSAGE = "pushgw_customer_pool"  # master -> workers: the pool size
HOT_CUSTOMERS = range(9_000_000, 9_000_005)  # HotCustomerUser's, apart from the pool
BIND_CONCURRENCY = 32
_user_numbers = itertools.count()

if CONFIG.shape:  # Locust runs the shape of any shape class in this module, so export one only when asked
    Shape = shapes.SHAPE_CLASSES[CONFIG.shape]


class CustomerPool:
    """The customers events are drawn from, uniformly: customer_id(0 .. count-1). Sized and bound at test
    start by the master (or the local runner), which tells its workers the size."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.bound: dict[str, int] = {}  # host -> customers 0 .. n-1 already bound there

    def draw(self, rnd: random.Random) -> int:
        return rnd.randrange(self.count)


POOL = CustomerPool(CONFIG.customers or MIN_CUSTOMERS)


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


def count_outcomes(environment: Environment, outcomes: Mapping[str, int], response_time_ms: float) -> None:
    """Count events by outcome in rows of request type "outcome" (each row's requests are events, its times
    those of the requests that carried them). Logged on the rows only, not on the aggregated total, so the
    failure ratio and the percentiles stay those of the HTTP requests."""
    for outcome, n in outcomes.items():
        entry = environment.stats.get(outcome, OUTCOME)
        for _ in range(n):
            entry.log(round(response_time_ms), 0)


class CoreBankingUser(FastHttpUser):
    """What every scenario shares: signed (or unsigned) posting, answer checks and outcome counts, events for
    customers drawn from the pool."""

    abstract = True
    connection_timeout = 10.0
    network_timeout = 30.0
    pool_events_per_s: ClassVar[float] = 0.0
    """New events per second one user of the class draws from the pool: the pool is sized from it."""

    def on_start(self) -> None:
        self.number = next(_user_numbers)
        self.rnd = random.Random(self.number)
        self.factory = EventFactory(POOL.count, seed=self.number, prefix=f"LOC{self.number:04d}")

    def new_event(self) -> dict[str, Any]:
        return self.factory.event(customer=POOL.draw(self.rnd))

    def headers(self, method: str, target: str, body: bytes = b"") -> dict[str, str]:
        if CONFIG.signed:
            return signed_headers(CONFIG.key_id, CONFIG.secret, method, target, body)
        return {"Content-Type": "application/json"}

    def post_event(self, event: dict[str, Any], name: str = "/v1/events", ok: tuple[int, ...] = ()) -> str:
        """Post one event and count its outcome; success is 202/200 with an accepting status, or a status code
        in `ok`. Returns the event's status ("" when it was not accepted)."""
        body = orjson.dumps(event)
        with self.client.post(
            "/v1/events",
            data=_raw(body),
            headers=self.headers("POST", "/v1/events", body),
            name=name,
            catch_response=True,
        ) as response:
            code = response.status_code
            status = (
                str(orjson.loads(response.content or b"{}").get("status", "")) if code in (200, 202) else ""
            )
            count_outcomes(
                self.environment, {outcome_of(code, status): 1}, response.request_meta["response_time"]
            )
            if code in ok:
                response.success()
                return ""
            if code not in (200, 202):
                response.failure(f"HTTP {code}")
                return ""
            if status not in ACCEPTED:
                response.failure(f"unexpected status {status!r}")
            return status

    def post_batch(self, size: int, name: str = "/v1/events/batch") -> None:
        """Post `size` new events in one batch and count each item's outcome; success is 200 with every item
        accepted."""
        body = orjson.dumps({"events": [self.new_event() for _ in range(size)]})
        with self.client.post(
            "/v1/events/batch",
            data=_raw(body),
            headers=self.headers("POST", "/v1/events/batch", body),
            name=name,
            catch_response=True,
        ) as response:
            elapsed_ms = response.request_meta["response_time"]
            if response.status_code != 200:
                count_outcomes(self.environment, {outcome_of(response.status_code): size}, elapsed_ms)
                response.failure(f"HTTP {response.status_code}")
                return
            results = orjson.loads(response.content or b"{}").get("results", [])
            outcomes = Counter(outcome_of(200, str(item.get("status", ""))) for item in results)
            count_outcomes(self.environment, outcomes, elapsed_ms)
            bad = sum(n for outcome, n in outcomes.items() if outcome not in ACCEPTED)
            if len(results) != size or bad:
                response.failure(f"{bad} of {size} items not accepted")

    def post_invalid(self) -> None:
        body, expected = invalid_payload(self.factory, self.rnd)
        with self.client.post(
            "/v1/events",
            data=_raw(body),
            headers=self.headers("POST", "/v1/events", body),
            name="/v1/events [invalid]",
            catch_response=True,
        ) as response:
            count_outcomes(
                self.environment,
                {outcome_of(response.status_code): 1},
                response.request_meta["response_time"],
            )
            if response.status_code == expected:
                response.success()  # a clear refusal is the right answer
            else:
                response.failure(f"expected {expected}, got {response.status_code}")


STEADY_TASKS_PER_S = 5.0
STEADY_BATCH = (10, 50)


class SteadyUser(CoreBankingUser):
    """Steady mixed traffic, 5 tasks/s: mostly single events, some batches, ~5% duplicates, ~3% invalid
    payloads, ~7% status reads."""

    weight = 10
    wait_time = constant_throughput(STEADY_TASKS_PER_S)
    # new events per task: 80% singles, 5% batches of 30 on average (the others add no new event)
    pool_events_per_s = STEADY_TASKS_PER_S * (0.80 + 0.05 * sum(STEADY_BATCH) / 2)

    def on_start(self) -> None:
        super().on_start()
        self.sent: deque[dict[str, Any]] = deque(maxlen=200)

    @tag("single")
    @task(80)
    def single(self) -> None:
        event = self.new_event()
        if self.post_event(event):
            self.sent.append(event)

    @tag("batch")
    @task(5)
    def batch(self) -> None:
        self.post_batch(self.rnd.randint(*STEADY_BATCH))

    @tag("duplicate")
    @task(5)
    def duplicate(self) -> None:
        # core banking's retry of an event already sent: answered by the event-id dedup (200 duplicate)
        if not self.sent:  # nothing sent yet (e.g. --tags duplicate): send the original first
            self.single()
            return
        self.post_event(self.rnd.choice(self.sent), name="/v1/events [duplicate]")

    @tag("invalid")
    @task(3)
    def invalid(self) -> None:
        self.post_invalid()

    @tag("status")
    @task(7)
    def status(self) -> None:
        if not self.sent:
            self.single()
            return
        event_id = self.rnd.choice(self.sent)["event_id"]
        self.client.get(
            f"/v1/events/{event_id}",
            headers=self.headers("GET", f"/v1/events/{event_id}"),
            name="/v1/events/{id}",
        )


class BatchBulkUser(CoreBankingUser):
    """Bulk load: one batch of PUSHGW_LOCUST_BATCH events (default 100) a second, as an end-of-day settlement
    run."""

    weight = 2
    wait_time = constant_throughput(1.0)
    batch_size = int(os.environ.get("PUSHGW_LOCUST_BATCH", "100"))
    pool_events_per_s = float(batch_size)

    @tag("batch", "bulk")
    @task
    def bulk(self) -> None:
        self.post_batch(self.batch_size, name=f"/v1/events/batch [{self.batch_size}]")


class DuplicateStormUser(CoreBankingUser):
    """A retry storm: each event is sent once and then re-sent up to 9 times (200 `duplicate` expected)."""

    weight = 3
    wait_time = between(0.05, 0.2)
    pool_events_per_s = 2.0  # of ~8 sends a second, about one in ten is new (rounded up)

    def on_start(self) -> None:
        super().on_start()
        self.storm: deque[tuple[dict[str, Any], int]] = deque(maxlen=20)

    @tag("duplicate", "storm")
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
        event = self.new_event()
        if self.post_event(event):
            self.storm.append((event, now_s))


class HotCustomerUser(CoreBankingUser):
    """Five customers flooded (a card being skimmed): over the rate limit events are digested, or 429
    under PUSHGW_RATE_POLICY=reject; both are the designed answer, so both count as success. The hot
    customers are apart from the pool, so the other scenarios' deliveries are not digested with them."""

    weight = 2
    wait_time = constant(0.02)

    @tag("hot")
    @task
    def flood(self) -> None:
        event = self.factory.event(customer=self.rnd.choice(HOT_CUSTOMERS))
        self.post_event(event, name="/v1/events [hot customer]", ok=(429,))


class E2EUser(CoreBankingUser):
    """Posts an event for a bound customer and polls its status until delivered; reports accepted ->
    delivered (Redis timestamps, ms) as request type "E2E", so it has percentiles in Locust's own stats."""

    weight = 2
    wait_time = between(0.5, 1.5)
    customers_per_user = 40  # its own customers, rotated: each stays under the default 5/60 rate limit

    def on_start(self) -> None:
        super().on_start()
        self.customers = [f"E2E{self.number:05d}{k:03d}" for k in range(self.customers_per_user)]
        for k, customer in enumerate(self.customers):
            body = orjson.dumps({"openid": openid_of(10_000_000 + self.number * 1000 + k)})
            self.client.put(
                f"/v1/bindings/{customer}",
                data=_raw(body),
                headers=self.headers("PUT", f"/v1/bindings/{customer}", body),
                name="/v1/bindings/{id}",
            )
        self.turn = itertools.cycle(self.customers)

    @tag("e2e")
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
            headers=self.headers("GET", f"/v1/events/{event_id}"),
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
    repeated. Run it beside SteadyUser and E2EUser: retries show up as E2E latency, not as lost events.

    Opt-in (_faults_only_when_asked): without PUSHGW_LOCUST_INJECT_FAULTS=1 it runs only when named on the
    command line, and the class picker does not offer it."""

    fixed_count = 1
    wait_time = constant(1.0)
    faults: ClassVar[bytes] = os.environ.get(
        "PUSHGW_LOCUST_FAULTS", '{"errcode_rates": {"-1": 0.3}}'
    ).encode()
    after_s = float(os.environ.get("PUSHGW_LOCUST_FAULT_AFTER_S", "10"))
    for_s = float(os.environ.get("PUSHGW_LOCUST_FAULT_FOR_S", "15"))

    @tag("faults")
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


def _faults_only_when_asked(environment: Environment) -> None:
    """Leave WeChatTroubleUser out of the default selection and the class picker unless it was named on the
    command line or PUSHGW_LOCUST_INJECT_FAULTS is on: a run from the Start button is fault-free. Workers keep
    it, as they spawn only what the master dispatches."""
    name = WeChatTroubleUser.__name__
    named = name in (getattr(environment.parsed_options, "user_classes", None) or [])
    if CONFIG.inject_faults or named or isinstance(environment.runner, WorkerRunner):
        return
    environment.user_classes[:] = [c for c in environment.user_classes if c is not WeChatTroubleUser]
    for offered in (environment.available_user_classes, environment.available_user_tasks):
        if offered:
            offered.pop(name, None)


def _has_tasks(user_class: type[User], tags: set[str] | None, exclude_tags: set[str] | None) -> bool:
    """Whether the tag options leave the class a task (Locust filters the same way)."""
    for user_task in user_class.tasks:
        task_tags: set[str] = getattr(user_task, "locust_tag_set", set())
        if (tags is None or task_tags & tags) and not (exclude_tags and task_tags & exclude_tags):
            return True
    return False


def _drop_classes_without_tasks(environment: Environment) -> None:
    """Leave out the classes that --tags / --exclude-tags (or the task picker) leave without a task: Locust
    would spawn them to fail "No tasks defined" again and again."""
    options = environment.parsed_options
    tags = environment.tags or getattr(options, "tags", None)
    exclude_tags = environment.exclude_tags or getattr(options, "exclude_tags", None)
    keep = [
        user_class
        for user_class in environment.user_classes
        if _has_tasks(user_class, set(tags) if tags else None, set(exclude_tags) if exclude_tags else None)
    ]
    dropped = sorted({c.__name__ for c in environment.user_classes} - {c.__name__ for c in keep})
    if not dropped:
        return
    if not keep:
        raise SystemExit(f"pushgw locustfile: the tag options leave no task in {', '.join(dropped)}")
    log.info("not spawned, no task left by the tag options: %s", ", ".join(dropped))
    environment.user_classes[:] = keep


def _planned_users(environment: Environment) -> int:
    """The most users the run will have: its shape's peak, or the count it starts (-u, the UI's form)."""
    stages: list[Stage] = getattr(environment.shape_class, "stages", [])
    if stages:
        return max(stage.users for stage in stages)
    starting = int(getattr(environment.runner, "target_user_count", 0) or 0)
    return max(1, starting, int(getattr(environment.parsed_options, "num_users", 0) or 0))


def _size_pool(environment: Environment) -> None:
    """Size the pool for the planned users of the chosen classes, or to PUSHGW_LOCUST_CUSTOMERS."""
    users = _planned_users(environment)
    classes = {c.__name__: (c.weight, c.fixed_count) for c in environment.user_classes}
    share = users_per_class(users, classes)
    rate = sum(share.get(c.__name__, 0.0) * c.pool_events_per_s for c in _core_banking(environment))
    count = CONFIG.customers or pool_size(rate, CONFIG.rate_limit)
    if count != POOL.count:
        log.info(
            "customer pool: %d customers for %d users (~%.0f new events/s; %s per customer admits %.1fx)",
            count,
            users,
            rate,
            CONFIG.rate_limit,
            count * CONFIG.rate_limit.count / CONFIG.rate_limit.window_s / rate if rate else float("inf"),
        )
    POOL.count = count


def _core_banking(environment: Environment) -> list[type[CoreBankingUser]]:
    return [c for c in environment.user_classes if issubclass(c, CoreBankingUser)]


def _prepare_pool(environment: Environment) -> None:
    """Size the customer pool and bind its customers (master or local runner only)."""
    _size_pool(environment)
    if environment.host:
        _bind_pool(environment.host)


def _bind(host: str, indices: Iterable[int]) -> int:
    """Bind customer_id(i) to openid_of(i) for each index, BIND_CONCURRENCY at a time, outside Locust's
    statistics (setup, not load). Returns how many failed."""
    client = HTTPClient.from_url(host, concurrency=BIND_CONCURRENCY, connection_timeout=5, network_timeout=10)

    def bind(index: int) -> bool:
        body = orjson.dumps({"openid": openid_of(index)})
        target = f"/v1/bindings/{customer_id(index)}"
        headers = signed_headers(CONFIG.key_id, CONFIG.secret, "PUT", target, body) if CONFIG.signed else {}
        try:
            response = client.put(target, body=body, headers={**headers, "Content-Type": "application/json"})
            response.read()
        except OSError:
            return False
        return bool(response.status_code == 200)

    try:
        return sum(not ok for ok in gevent.pool.Pool(BIND_CONCURRENCY).imap_unordered(bind, indices))
    finally:
        client.close()


def _bind_pool(host: str) -> None:
    """Bind the pool's customers not yet bound at `host`, and the hot customers, before any user starts."""
    start = POOL.bound.get(host, 0)
    if start >= POOL.count:
        return
    started = time.monotonic()
    indices = [*range(start, POOL.count), *(HOT_CUSTOMERS if not start else ())]
    failed = _bind(host, indices)
    if failed:
        log.warning(
            "binding customers: %d of %d failed; events for them end as no_binding", failed, len(indices)
        )
    else:
        POOL.bound[host] = POOL.count
    log.info("bound %d customers in %.1f s", len(indices) - failed, time.monotonic() - started)


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _announce(environment: Environment, **_: Any) -> None:
    """Leave out fault injection unless asked, and classes without tasks; say how requests are sent and what
    the exit code will follow."""
    _faults_only_when_asked(environment)
    _drop_classes_without_tasks(environment)
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(POOL_MESSAGE, _on_pool_message)
        return
    mode = f"signed as {CONFIG.key_id!r}" if CONFIG.signed else "unsigned (open ingress)"
    on = any(c is WeChatTroubleUser for c in environment.user_classes)
    faults = (
        "on (WeChatTroubleUser)" if on else "off (name WeChatTroubleUser or PUSHGW_LOCUST_INJECT_FAULTS=1)"
    )
    log.info(
        "pushgw locustfile: requests %s; shape %s; fault injection %s", mode, CONFIG.shape or "none", faults
    )
    log.info("pushgw locustfile: %s", CONFIG.policy())
    if getattr(environment.parsed_options, "headless", False):
        _prepare_pool(environment)  # now, so that binding does not eat into --run-time


def _on_pool_message(environment: Environment, msg: Any, **_: Any) -> None:
    POOL.count = int(msg.data["count"])


@events.test_start.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _prepare_customers(environment: Environment, **_: Any) -> None:
    """Size the customer pool for the users about to start, tell the workers, bind the customers."""
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        return
    _drop_classes_without_tasks(environment)  # again: the class picker chooses after init
    _prepare_pool(environment)  # a no-op when init did it for the same load
    if isinstance(runner, MasterRunner):
        runner.send_message(POOL_MESSAGE, {"count": POOL.count})


def _verdict(environment: Environment) -> Verdict:
    total = environment.stats.total
    p99_ms = total.get_response_time_percentile(0.99) if total.num_requests else None
    exceptions = (
        sum(row["count"] for row in environment.runner.exceptions.values()) if environment.runner else 0
    )
    return exit_verdict(total.fail_ratio, p99_ms, CONFIG.max_failure_ratio, CONFIG.max_p99_ms, exceptions)


@events.test_stop.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _judge_ui_run(environment: Environment, **_: Any) -> None:
    """In the web UI, judge each run as it stops (a headless run is judged once, on quitting)."""
    if isinstance(environment.runner, WorkerRunner) or getattr(environment.parsed_options, "headless", True):
        return
    verdict = _verdict(environment)
    (log.error if verdict.code else log.info)("%s", verdict)


@events.quitting.add_listener  # type: ignore[untyped-decorator]  # locust's is unannotated
def _exit_code_policy(environment: Environment, **_: Any) -> None:
    """The exit code follows the policy, pass or fail (not Locust's "1 on any failure"); printed both ways."""
    if isinstance(environment.runner, WorkerRunner):
        return
    verdict = _verdict(environment)
    (log.error if verdict.code else log.info)("%s", verdict)
    environment.process_exit_code = verdict.code
