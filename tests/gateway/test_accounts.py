"""Several official accounts: the settings that name them and their template ids, the binding's appid check,
and the per-account template ids of the renderer (issue 8)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.event import EventType, parse_event
from gateway.core.settings import ConfigError, Settings
from tests.conftest import Stack
from tests.support import KEY_ID, make_event
from workers.render import Templates, render_digest, render_event

CARD = "wx_card_centre"
IDS = {**{kind.value: f"CardTpl-{kind.value}" for kind in EventType}, "digest": "CardTpl-digest"}
ENV = {"PUSHGW_WECHAT_APPID": "wx_retail", "PUSHGW_WECHAT_SECRET": "retail-s3cr3t"}


def _file(tmp_path: Path, content: Any) -> str:
    path = tmp_path / "templates.json"
    path.write_bytes(content if isinstance(content, bytes) else orjson.dumps(content))
    return str(path)


def test_accounts_and_their_template_ids_are_read_and_the_secrets_masked(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            **ENV,
            "PUSHGW_WECHAT_ACCOUNTS": f"{CARD}:card-s3cr3t",
            "PUSHGW_WECHAT_TEMPLATES": _file(tmp_path, {CARD: IDS}),
        }
    )
    assert settings.wechat_accounts == {CARD: "card-s3cr3t"}
    assert settings.wechat_templates == {CARD: IDS}
    assert settings.wechat_appids() == {"wx_retail", CARD}
    assert "s3cr3t" not in repr(settings)
    assert Settings.from_env({}).wechat_appids() == frozenset()  # no default account: the gateway checks none


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"PUSHGW_WECHAT_ACCOUNTS": "wx_card"}, "PUSHGW_WECHAT_ACCOUNTS"),
        ({"PUSHGW_WECHAT_ACCOUNTS": "card:s3cr3t"}, "PUSHGW_WECHAT_ACCOUNTS"),
        ({"PUSHGW_WECHAT_ACCOUNTS": "wx_retail:s3cr3t"}, "repeats the default account"),
        (
            {"PUSHGW_WECHAT_ACCOUNTS": f"{CARD}:s3cr3t"},
            f"PUSHGW_WECHAT_TEMPLATES names no template ids for .*{CARD}",
        ),
    ],
)
def test_a_bad_accounts_setting_names_its_variable_never_the_secret(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        Settings.from_env({**ENV, **environ})
    assert "s3cr3t" not in str(raised.value)


def test_further_accounts_need_a_default_account(tmp_path: Path) -> None:
    environ = {"PUSHGW_WECHAT_ACCOUNTS": f"{CARD}:s", "PUSHGW_WECHAT_TEMPLATES": _file(tmp_path, {CARD: IDS})}
    with pytest.raises(ConfigError, match="needs PUSHGW_WECHAT_APPID"):
        Settings.from_env(environ)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        ([IDS], "must hold an object"),
        ({CARD: {**IDS, "digest": ""}}, "must map event types"),
        ({CARD: {k: v for k, v in IDS.items() if k != "refund"}}, "refund"),
        ({CARD: {**IDS, "salary": "x"}}, "salary"),
        ({CARD: IDS, "wx_unknown": IDS}, "wx_unknown, which is not a configured account"),
    ],
)
def test_a_bad_template_ids_file_names_the_variable(tmp_path: Path, content: Any, message: str) -> None:
    environ = {
        **ENV,
        "PUSHGW_WECHAT_ACCOUNTS": f"{CARD}:s",
        "PUSHGW_WECHAT_TEMPLATES": _file(tmp_path, content),
    }
    with pytest.raises(ConfigError, match="PUSHGW_WECHAT_TEMPLATES") as raised:
        Settings.from_env(environ)
    assert message in str(raised.value)


def test_a_missing_template_ids_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"PUSHGW_WECHAT_TEMPLATES.*cannot read"):
        Settings.from_env({"PUSHGW_WECHAT_TEMPLATES": str(tmp_path / "nowhere.json")})


def test_an_accounts_templates_are_the_shipped_ones_under_its_own_ids() -> None:
    shipped = Templates.load()
    card = shipped.with_ids(IDS)
    event = parse_event(make_event(type="loan_repayment"))
    ours, theirs = (
        render_event(shipped, event, "oUser_r1", KEY_ID),
        render_event(card, event, "oUser_r1", KEY_ID),
    )
    assert theirs["template_id"] == "CardTpl-loan_repayment" != ours["template_id"]
    assert theirs["data"] == ours["data"]
    assert render_digest(card, "D-1", [event], "oUser_r1")["template_id"] == "CardTpl-digest"
    assert shipped.template_ids() != card.template_ids()


StackFactory = Callable[..., Awaitable[Stack]]


async def test_a_binding_may_name_any_appid_when_the_gateway_knows_no_accounts(
    stack_for: StackFactory,
) -> None:
    """A gateway without WeChat settings cannot check; the worker dead-letters what it cannot send."""
    stack = await stack_for(workers=0, wechat_appid="")
    status, body = await stack.client.call(
        "PUT", "/v1/bindings/C-any", {"openid": "oUser_any1", "appid": "wx_any"}
    )
    assert (status, body["appid"]) == (200, "wx_any")


async def test_a_binding_names_the_default_or_a_further_account(stack_for: StackFactory) -> None:
    stack = await stack_for(workers=0, wechat_accounts={CARD: "s"}, wechat_templates={CARD: IDS})
    for appid in (stack.settings.wechat_appid, CARD):
        status, body = await stack.client.call(
            "PUT", "/v1/bindings/C-ok", {"openid": "oUser_ok01", "appid": appid}
        )
        assert (status, body["appid"]) == (200, appid)
    status, body = await stack.client.call(
        "PUT", "/v1/bindings/C-ok", {"openid": "oUser_ok01", "appid": "wx_nope"}
    )
    assert status == 422 and body["error"] == {
        "code": "unknown_appid",
        "message": "appid is not an official account this deployment sends through",
        "field": "appid",
    }
