"""The gateway's own WeChat client against every fault mode of the simulator (issue 4).

Two levels: the `WeChatClient` straight against the simulator, one send per fault mode, asserting the Answer
and its classification; and the real pipeline (gateway, worker, Redis, simulator) under latency
distributions and refusing users, asserting the outcome and that at most one message per event id reaches
the user. The pipeline under failure rates, outages, quotas and poison messages, with concurrent load and
the fault oracle, is tests/faults/test_wechat.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.core.event import parse_event
from tests.conftest import Stack
from tests.support import APP_SECRET, APPID, KEY_ID, Running, eventually, make_event
from tests.workers.flows import StackFactory, backlog, lifecycle, record_statuses
from wechatsim.app import SimConfig
from wechatsim.app import create_app as create_sim
from workers.render import Templates, client_msg_id, render_event
from workers.wechat import Answer, Outcome, Verdict, Wait, WeChatClient, classify

OTHER_APPID = "wx_other_app"
OTHER_SECRET = "other_app_secret"  # noqa: S105 - a fixture app secret
OPENID = "oUser_simfault"
FINAL = {"delivered", "failed", "dead_lettered"}
TIMEOUT_S = 0.3


def _sim_config() -> SimConfig:
    return SimConfig(apps={APPID: APP_SECRET, OTHER_APPID: OTHER_SECRET})


# --- the client alone ------------------------------------------------------------------------------------


class Direct:
    """A simulator on loopback and the gateway's WeChatClient (timeout TIMEOUT_S) holding a token for it."""

    def __init__(self, session: aiohttp.ClientSession, url: str, client: WeChatClient, token: str) -> None:
        self.session, self.url, self.client, self.token = session, url, client, token

    async def sim(self, method: str, path: str, data: Any = None) -> Any:
        async with self.session.request(method, self.url + path, json=data) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def send(self, event_id: str | None = None) -> Answer:
        event = parse_event(make_event(**({"event_id": event_id} if event_id else {})))
        return await self.client.send_template(
            self.token, render_event(Templates.load(), event, OPENID, KEY_ID)
        )


@pytest.fixture
async def direct() -> AsyncIterator[Direct]:
    sim = await Running(create_sim(_sim_config())).start()
    session = aiohttp.ClientSession()
    try:
        client = WeChatClient(session, sim.url, TIMEOUT_S)
        issued = await client.stable_token(APPID, APP_SECRET)
        yield Direct(session, sim.url, client, issued.token)
    finally:
        await session.close()
        await sim.stop()


Setup = Callable[[Direct], Awaitable[None]]


def _faults(body: dict[str, Any]) -> Setup:
    async def put(direct: Direct) -> None:
        await direct.sim("PUT", "/sim/faults", body)

    return put


def _post(path: str, body: dict[str, str]) -> Setup:
    async def post(direct: Direct) -> None:
        await direct.sim("POST", path, body)

    return post


DELIVERED = Verdict(Outcome.DELIVERED)
RETRY_FAILURE = Verdict(Outcome.RETRY, breaker_failure=True)
# (fault mode, how to set it up, the Answer's label, the verdict)
CLIENT_MODES: list[tuple[str, Setup, str, Verdict]] = [
    ("latency_fixed", _faults({"latency_dist": {"kind": "fixed", "ms": 20}}), "0", DELIVERED),
    ("slow_past_timeout", _faults({"slow_rate": 1.0, "slow_ms": 800}), "timeout", RETRY_FAILURE),
    ("script_delay", _faults({"script": [{"delay_ms": 800}]}), "timeout", RETRY_FAILURE),
    ("reset_rate", _faults({"reset_rate": 1.0}), "connection", RETRY_FAILURE),
    ("script_reset", _faults({"script": [{"reset": True}]}), "connection", RETRY_FAILURE),
    ("http_5xx_rate", _faults({"http_5xx_rate": 1.0}), "http_502", RETRY_FAILURE),
    ("errcode_busy", _faults({"errcode_rates": {"-1": 1.0}}), "-1", RETRY_FAILURE),
    ("outage", _faults({"outage": True}), "http_503", RETRY_FAILURE),
    ("outage_for_s", _faults({"outage_for_s": 60}), "http_503", RETRY_FAILURE),
    ("daily_quota", _faults({"daily_quota": 0}), "45009",
     Verdict(Outcome.RETRY, wait=Wait.QUOTA_RESET, spends_attempt=False)),
    ("openid_of_another_app", _post("/sim/openids", {"openid": OPENID, "appid": OTHER_APPID}), "40003",
     Verdict(Outcome.PERMANENT, binding_state="invalid")),
    ("blacklisted", _post("/sim/block", {"openid": OPENID}), "43019",
     Verdict(Outcome.PERMANENT, binding_state="blocked")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("mode", "setup", "label", "verdict"), CLIENT_MODES, ids=[m[0] for m in CLIENT_MODES]
)
async def test_the_client_answers_and_classifies_each_fault_mode(
    direct: Direct, mode: str, setup: Setup, label: str, verdict: Verdict
) -> None:
    await setup(direct)
    answer = await direct.send()
    assert answer.label == label, mode
    assert classify(answer) == verdict
    if verdict.outcome is Outcome.DELIVERED:
        assert answer.msgid is not None and int(answer.msgid) > 0


@pytest.mark.parametrize("faults", [{"qps": 1}, {"minute_quota": 1}], ids=["qps", "minute_quota"])
async def test_the_per_app_rate_limits_answer_45011_to_the_client(
    direct: Direct, faults: dict[str, Any]
) -> None:
    """Past the per-app QPS (or the minute quota) the send answers 45011, retried after the next minute."""
    await direct.sim("PUT", "/sim/faults", faults)
    answers = [await direct.send() for _ in range(3)]
    labels = Counter(answer.label for answer in answers)
    # three quick sends span at most two whole seconds (minutes): at most two get through
    assert labels["45011"] >= 1 and labels["0"] >= 1 and labels["0"] + labels["45011"] == 3
    limited = next(answer for answer in answers if answer.label == "45011")
    assert classify(limited) == Verdict(Outcome.RETRY, wait=Wait.NEXT_MINUTE, spends_attempt=False)


@pytest.mark.parametrize(
    "faults",
    [{"slow_rate": 1.0, "slow_ms": 800}, {"script": [{"delay_ms": 800}]}],
    ids=["slow_rate", "script_delay"],
)
async def test_a_resend_after_a_timeout_with_the_same_client_msg_id_gets_the_first_msgid(
    direct: Direct, faults: dict[str, Any]
) -> None:
    await direct.sim("PUT", "/sim/faults", faults)
    lost = await direct.send("CBS-20261124-SLOW00001")
    assert lost.transport == "timeout"
    await direct.sim("PUT", "/sim/faults", {})
    again = await direct.send("CBS-20261124-SLOW00001")
    [message] = (await direct.sim("GET", f"/sim/messages?touser={OPENID}"))["messages"]
    assert (again.errcode, again.msgid) == (0, str(message["msgid"]))
    assert (await direct.sim("GET", "/sim/stats"))["deduplicated"] == 1


async def test_a_reset_send_is_not_processed_and_the_resend_delivers_once(direct: Direct) -> None:
    await direct.sim("PUT", "/sim/faults", {"script": [{"reset": True}]})
    assert (await direct.send("CBS-20261124-RESET0001")).transport == "connection"
    assert (await direct.sim("GET", "/sim/messages"))["messages"] == []
    again = await direct.send("CBS-20261124-RESET0001")
    assert again.errcode == 0
    stats = await direct.sim("GET", "/sim/stats")
    assert (stats["delivered"], stats["deduplicated"]) == (1, 0)


# --- the pipeline ----------------------------------------------------------------------------------------


_customers = iter(range(10**6))


async def _post_events(stack: Stack, count: int, customer: str | None = None) -> list[dict[str, Any]]:
    """`count` accepted events, each of its own bound customer (one customer's burst would be digested),
    or all of `customer`."""
    events = []
    for _ in range(count):
        customer_id = customer
        if customer_id is None:
            number = next(_customers)
            customer_id = f"C-simfault-{number}"
            await stack.client.bind(customer_id, f"oUser_simfault_{number}")
        events.append(make_event(customer_id=customer_id))
    for event in events:
        status, body = await stack.client.post_event(event)
        assert status == 202, body
    return events


async def _until_final(stack: Stack, events: list[dict[str, Any]], timeout_s: float = 25.0) -> dict[str, str]:
    async def done() -> bool:
        return set((await record_statuses(stack.redis, events)).values()) <= FINAL

    try:
        await eventually(done, timeout_s=timeout_s)
    except AssertionError:
        raise AssertionError(await record_statuses(stack.redis, events)) from None
    return await record_statuses(stack.redis, events)


async def _assert_promise(stack: Stack, events: list[dict[str, Any]]) -> None:
    """Every event is final, nothing is left queued, and no event id reached the user twice."""
    statuses = await record_statuses(stack.redis, events)
    assert set(statuses.values()) <= FINAL, statuses
    assert await backlog(stack.redis) == 0
    messages = (await stack.sim("GET", "/sim/messages"))["messages"]
    per_id = Counter(message["client_msg_id"] for message in messages)
    assert all(count == 1 for count in per_id.values()), per_id
    delivered = {
        client_msg_id(KEY_ID, event_id) for event_id, status in statuses.items() if status == "delivered"
    }
    assert set(per_id) == delivered


async def _bound_stack(stack_for: StackFactory, **overrides: Any) -> Stack:
    stack = await stack_for(sim_config=_sim_config(), **overrides)
    await stack.client.bind("C-simfault", OPENID)
    return stack


LATENCIES: list[dict[str, Any]] = [
    {"kind": "fixed", "ms": 15},
    {"kind": "uniform", "low_ms": 1, "high_ms": 40},
    {"kind": "lognormal", "median_ms": 10, "sigma": 1.0, "max_ms": 150},
    {"kind": "pareto", "scale_ms": 2, "alpha": 1.2, "max_ms": 150},
]


@pytest.mark.parametrize("dist", LATENCIES, ids=[d["kind"] for d in LATENCIES])
async def test_every_latency_distribution_delivers_each_event_once(
    stack_for: StackFactory, dist: dict[str, Any]
) -> None:
    stack = await _bound_stack(stack_for)
    await stack.sim("PUT", "/sim/faults", {"latency_dist": dist, "seed": 7})
    events = await _post_events(stack, 10)

    statuses = await _until_final(stack, events)
    assert set(statuses.values()) == {"delivered"}
    await _assert_promise(stack, events)
    stats = await stack.sim("GET", "/sim/stats")
    assert (stats["delivered"], stats["errcodes"]) == (10, {"0": 10})


@pytest.mark.parametrize(
    ("path", "body", "errcode", "binding_state"),
    [
        ("/sim/openids", {"openid": OPENID, "appid": OTHER_APPID}, "40003", "invalid"),
        ("/sim/block", {"openid": OPENID}, "43019", "blocked"),
    ],
    ids=["openid_of_another_app", "blacklisted"],
)
async def test_a_refusing_user_fails_the_event_and_marks_the_binding(
    stack_for: StackFactory, path: str, body: dict[str, str], errcode: str, binding_state: str
) -> None:
    stack = await _bound_stack(stack_for)
    await stack.sim("POST", path, body)
    events = await _post_events(stack, 1, customer="C-simfault")

    assert (await _until_final(stack, events)) == {events[0]["event_id"]: "failed"}
    view = await lifecycle(stack, events[0]["event_id"])
    assert (view["attempts"], view["last_error"]) == (1, errcode)
    _, binding = await stack.client.call("GET", "/v1/bindings/C-simfault")
    assert binding["status"] == binding_state
    await _assert_promise(stack, events)
    assert (await stack.sim("GET", "/sim/stats"))["errcodes"] == {errcode: 1}
