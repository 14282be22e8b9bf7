"""The operator commands as the runbook has operators run them: the real `pushgw` command in a subprocess.

`pushgw dlq list` shows the masked account and the errcode; every operator command refuses a Redis (or a
gateway) that holds no pushgw data instead of reporting it empty; `pushgw events|customers show` sign for
the operator and never print a secret or an openid; `pushgw bindings import` re-sends bindings in bulk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core import keys, metrics
from tests.conftest import Stack
from tests.support import KEY_ID, SECRET, eventually, make_event
from tests.workers.flows import PUSHGW, StackFactory, pushgw_env, until_status

pytestmark = pytest.mark.e2e
ACCOUNT = "6222020200001234"
OPENID = "oUser_operator01"


async def run(stack: Stack, *args: str, **env: str) -> tuple[int, str, str]:
    """`pushgw ARGS` against the stack's Redis and gateway, signing with the fixture key."""
    process = await asyncio.create_subprocess_exec(
        PUSHGW,
        *args,
        env=pushgw_env(
            stack.settings.redis_url,
            **{
                "PUSHGW_API_KEYS": f"{KEY_ID}:{SECRET}",
                "PUSHGW_GATEWAY_URL": stack.client.url,
                "PUSHGW_LOG_LEVEL": "WARNING",
                **env,
            },
        ),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    text = out.decode() + err.decode()
    assert "Traceback" not in text and SECRET not in text, text
    return process.returncode, out.decode(), err.decode()


def rows(out: str) -> list[Any]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def _dead_letters(reason: str) -> float:
    [family] = metrics.DEAD_LETTERS.collect()
    found = [s.value for s in family.samples if s.name.endswith("_total") and s.labels == {"reason": reason}]
    return found[0] if found else 0.0


async def test_dlq_list_shows_the_masked_account_and_the_errcode(stack_for: StackFactory) -> None:
    """Runbook, PushgwDeadLettersGrowing and Replaying dead letters: the reason `max_attempts: <errcode>`
    with the bounded errcode label (`http_503`), in the list and in the metric; the account masked."""
    stack = await stack_for(max_attempts=2)
    await stack.client.bind("C-dlq", OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"http_status": 503}] * 2})
    before = _dead_letters("max_attempts: http_503")
    event = make_event(customer_id="C-dlq", account=ACCOUNT)
    assert (await stack.client.post_event(event))[0] == 202
    await until_status(stack, event["event_id"], "dead_lettered")
    status, out, _ = await run(stack, "dlq", "list", "--since", "2020-01-01T00:00:00+08:00")
    [row] = rows(out)
    assert status == 0
    assert (row["event_id"], row["account"], row["reason"]) == (
        event["event_id"],
        "****1234",
        "max_attempts: http_503",
    )
    assert ACCOUNT not in out
    assert _dead_letters("max_attempts: http_503") == before + 1


@pytest.mark.parametrize(
    "command",
    [["dlq", "list"], ["dlq", "replay"], ["dlq", "list", "--notices"]],
)
async def test_dlq_refuses_a_redis_without_pushgw_data(stack_for: StackFactory, command: list[str]) -> None:
    """Runbook, First five minutes: a Redis without the data epoch (someone else's, or one that lost its
    data) is refused with exit 3 and a line naming the URL, never listed as empty."""
    stack = await stack_for(workers=0)
    await stack.redis.delete(keys.EPOCH)
    status, out, err = await run(stack, *command)
    assert (status, out) == (3, "")
    assert "holds no pushgw data" in err and stack.settings.redis_url in err


async def test_dlq_refuses_another_deployments_epoch(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    status, out, err = await run(stack, "dlq", "list", PUSHGW_REDIS_EPOCH="0123456789abcdef")
    assert (status, out) == (3, "")
    assert "PUSHGW_REDIS_EPOCH names 0123456789abcdef" in err


async def test_an_unreachable_redis_is_one_line_not_a_traceback(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    status, out, err = await run(stack, "dlq", "list", PUSHGW_REDIS_URL="redis://127.0.0.1:1/0")
    assert (status, out) == (2, "")
    assert "cannot use Redis at redis://127.0.0.1:1/0" in err


async def test_events_show_signs_for_the_operator(stack_for: StackFactory) -> None:
    """Runbook, First five minutes step 4: `pushgw events show ID` (a delivered event shows no
    last_error; the error of its failed first attempt is history)."""
    stack = await stack_for()
    await stack.client.bind("C-show", OPENID)
    await stack.sim("PUT", "/sim/faults", {"script": [{"errcode": -1}]})
    event = make_event(customer_id="C-show")
    await stack.client.post_event(event)
    await until_status(stack, event["event_id"], "delivered")
    status, out, _ = await run(stack, "events", "show", event["event_id"])
    [view] = rows(out)
    assert status == 0
    assert (view["status"], view["attempts"], view["last_error"]) == ("delivered", 2, None)
    assert view["error_before_delivery"] == "-1"
    status, out, err = await run(stack, "events", "show", "CBS-nothing-here")
    assert (status, out) == (1, "") and "404" in err


async def test_customers_show_masks_the_openid_and_uses_a_scoped_operator_key(
    stack_for: StackFactory,
) -> None:
    """Runbook, "I did not get the alert": binding status, preferences and timeline in one call, signed
    with a key that has only the scopes it needs."""
    ops_secret = "ops-secret-value"  # noqa: S105 - a fixture key
    stack = await stack_for(
        api_keys={KEY_ID: SECRET, "ops": ops_secret},
        api_key_scopes={"ops": frozenset({"bindings", "customers"})},
    )
    await stack.client.bind("C-cust", OPENID)
    await stack.client.call("PUT", "/v1/customers/C-cust/preferences", {"muted_types": ["refund"]})
    event = make_event(customer_id="C-cust")
    await stack.client.post_event(event)
    await until_status(stack, event["event_id"], "delivered")
    keys_env = f"{KEY_ID}:{SECRET},ops:{ops_secret}"
    status, out, _ = await run(
        stack, "customers", "show", "C-cust", PUSHGW_API_KEYS=keys_env, PUSHGW_OPERATOR_KEY_ID="ops"
    )
    [shown] = rows(out)
    assert status == 0
    assert OPENID not in out and ops_secret not in out
    assert shown["binding"]["status"] == "active" and shown["binding"]["openid"].startswith("oUse")
    assert shown["preferences"]["muted_types"] == ["refund"]
    assert [entry["event_id"] for entry in shown["timeline"]] == [event["event_id"]]
    # the same key may not read events (no `events` scope): said, not hidden
    status, _, err = await run(
        stack, "events", "show", event["event_id"], PUSHGW_API_KEYS=keys_env, PUSHGW_OPERATOR_KEY_ID="ops"
    )
    assert status == 1 and "403" in err
    # several keys and none named: the command says which setting to set
    status, _, err = await run(stack, "customers", "show", "C-cust", PUSHGW_API_KEYS=keys_env)
    assert status == 1 and "PUSHGW_OPERATOR_KEY_ID" in err


async def test_lookups_refuse_a_gateway_whose_redis_has_no_pushgw_data(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0)
    await stack.redis.delete(keys.EPOCH)

    async def refused() -> bool:  # the gateway notices at its next readiness check (every 5 s)
        status, out, err = await run(stack, "events", "show", "E1")
        return status == 3 and out == "" and "no pushgw data" in err

    await eventually(refused, timeout_s=15, step_s=0.5)
    status, out, _ = await run(stack, "customers", "show", "C1")
    assert (status, out) == (3, "")


async def test_bindings_batch_binds_each_item_and_says_which_failed(stack_for: StackFactory) -> None:
    """Runbook, Redis lost its data step 5: core banking re-sends every binding in bulk."""
    stack = await stack_for(workers=0)
    items = [
        {"customer_id": "C-b1", "openid": "oUser_batch01"},
        {"customer_id": "C-b2", "openid": "x"},  # rejected: the openid
        {"customer_id": "-bad", "openid": "oUser_batch03"},  # rejected: the customer id
        {"customer_id": "C-b1", "openid": "oUser_batch04"},  # the later item wins
        {"customer_id": "C-b5", "openid": "oUser_batch05", "extra": 1},
    ]
    status, body = await stack.client.call("POST", "/v1/bindings/batch", {"bindings": items})
    assert status == 200
    assert [(r["customer_id"], r["status"]) for r in body["results"]] == [
        ("C-b1", "bound"),
        ("C-b2", "rejected"),
        (None, "rejected"),
        ("C-b1", "bound"),
        ("C-b5", "rejected"),
    ]
    assert body["results"][1]["error"]["field"] == "openid"
    assert body["results"][4]["error"]["code"] == "unknown_field"
    assert (await stack.client.call("GET", "/v1/bindings/C-b1"))[1]["openid"] == "oUser_batch04"
    assert (await stack.client.call("GET", "/v1/bindings/C-b2"))[0] == 404
    status, body = await stack.client.call("POST", "/v1/bindings/batch", {"bindings": items[:1] * 501})
    assert status == 413


async def test_bindings_batch_needs_the_bindings_scope_and_refuses_a_replay(stack_for: StackFactory) -> None:
    stack = await stack_for(
        workers=0,
        api_keys={KEY_ID: SECRET, "rep": "reports-secret"},
        api_key_scopes={"rep": frozenset({"events"})},
    )
    body = orjson.dumps({"bindings": [{"customer_id": "C-r1", "openid": "oUser_replay1"}]})
    from gateway.core import signing  # the client side, as core banking signs

    headers = {
        "Content-Type": "application/json",
        **signing.signed_headers("rep", "reports-secret", "POST", "/v1/bindings/batch", body),
    }
    assert (await stack.client.call("POST", "/v1/bindings/batch", raw=body, headers=headers))[0] == 403
    signed = {
        "Content-Type": "application/json",
        **signing.signed_headers(KEY_ID, SECRET, "POST", "/v1/bindings/batch", body),
    }
    assert (await stack.client.call("POST", "/v1/bindings/batch", raw=body, headers=signed))[0] == 200
    assert (await stack.client.call("POST", "/v1/bindings/batch", raw=body, headers=signed))[0] == 401


async def test_bindings_import_from_a_file(stack_for: StackFactory, tmp_path: Path) -> None:
    stack = await stack_for(workers=0)
    lines = [
        orjson.dumps({"customer_id": f"C-i{n}", "openid": f"oUser_import{n:02d}"}).decode() for n in range(3)
    ]
    lines.insert(1, "not json")
    lines.append(orjson.dumps({"customer_id": "C-i9", "openid": "bad id!"}).decode())
    path = tmp_path / "bindings.jsonl"
    await asyncio.to_thread(path.write_text, "\n".join(lines) + "\n", encoding="utf-8")
    status, out, _ = await run(stack, "bindings", "import", str(path))
    printed = rows(out)
    assert status == 1
    assert printed[-1] == {"bound": 3, "rejected": 2}
    assert {row["line"] for row in printed[:-1]} == {2, 5}
    assert "oUser_import" not in out and "bad id!" not in out
    for n in range(3):
        assert (await stack.client.call("GET", f"/v1/bindings/C-i{n}"))[1]["openid"] == f"oUser_import{n:02d}"


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("max_attempts: http_503", "max_attempts: http_503"),
        ("max_attempts: -1", "max_attempts: -1"),
        ("max_age: circuit_open", "max_age: circuit_open"),
        ("render: amount 'x' is not a decimal", "render"),  # free text never becomes a label
        ("unknown_appid: wx_anything_at_all", "unknown_appid"),
        ("47003", "47003"),
    ],
)
def test_the_dead_letter_label_keeps_the_errcode_and_stays_bounded(reason: str, label: str) -> None:
    from workers.delivery import dead_letter_label

    assert dead_letter_label(reason) == label
