"""Every flag of every `pushgw` subcommand through the real parser and the settings it builds; the one time
parser of the operator commands."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from gateway.cli import build_parser, command_settings, flag_name, main
from gateway.core import clock
from gateway.core.event import EventType
from gateway.core.settings import Settings, setting_specs

ROOT = Path(__file__).resolve().parent.parent


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _setting_values(tmp_path: Path) -> dict[str, str]:
    """One coherent value for every setting flag (cross-field rules hold when all are given at once)."""
    templates = tmp_path / "templates.json"
    kinds = [*(t.value for t in EventType), "digest"]
    ids = {kind: f"tpl_{kind}" for kind in kinds}
    templates.write_bytes(orjson.dumps({"wx_demo_app": ids, "wxother": ids}))
    given = {
        "redis_url": "redis://127.0.0.1:1/0",
        "api_keys": "cbs:secret-one,ops:secret-two",
        "api_key_scopes": "ops=events+bindings+customers",
        "operator_key_id": "ops",
        "wechat_appid": "wx_demo_app",
        "wechat_secret": "app-secret",
        "wechat_accounts": "wxother:other-secret",
        "wechat_templates": str(templates),
        "callback_urls": "cbs=http://127.0.0.1:1/notices",
        "callback_previous_secrets": "cbs:older-secret",
        "tls_cert_file": "cert.pem",
        "tls_key_file": "key.pem",
        "tls_client_ca_file": "ca.pem",
        "wechat_callback_token": "callback-token",
        "wechat_encoding_aes_key": "a" * 43,
        "critical_rules": "debit>=1000",
        "gateway_url": "http://127.0.0.1:18080",
    }
    values = {}
    for spec in setting_specs():
        default = spec.default_factory() if callable(spec.default_factory) else spec.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        values[spec.name] = given.get(spec.name, "" if default in ("", {}) else shown)
    return values


def _positionals(parser: argparse.ArgumentParser, tmp_path: Path) -> list[str]:
    """A value for each positional argument (an action's first choice, else a path)."""
    return [
        str(next(iter(action.choices))) if action.choices else str(tmp_path / action.dest)
        for action in parser._actions
        if not action.option_strings
    ]


def _own_flags(command: str, parser: argparse.ArgumentParser, tmp_path: Path) -> list[str]:
    """A value for each of the subcommand's own (non-setting) flags."""
    settings = {spec.name for spec in setting_specs()}
    argv: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in settings or action.dest == "help":
            continue
        flag = action.option_strings[0]
        if isinstance(action, argparse._StoreTrueAction):
            argv.append(flag)
        elif action.dest in {"since", "until"}:
            argv += [flag, "2026-11-24T00:00:00+08:00"]
        elif action.choices:
            argv += [flag, str(next(iter(action.choices)))]
        elif action.type in (int, float) or action.nargs == "?":
            argv += [flag, "2"]
        else:
            argv += [flag, str(tmp_path / action.dest)]
    return argv


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_every_flag_of_every_subcommand_parses_and_builds_settings(command: str, tmp_path: Path) -> None:
    parser = _subcommands()[command]
    argv = [command, *_positionals(parser, tmp_path), *_own_flags(command, parser, tmp_path)]
    takes_settings = any(action.dest == "redis_url" for action in parser._actions)
    if takes_settings:
        for name, value in _setting_values(tmp_path).items():
            argv += [flag_name(name), value]
    args = build_parser().parse_args(argv)
    if takes_settings:
        settings = command_settings(args)
        assert settings.redis_url == "redis://127.0.0.1:1/0"
        assert settings.operator_key_id == "ops"


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--worker-concurrency", "16"], 16),  # crashed: "got multiple values for keyword argument"
        (["--concurrency", "8"], 8),
        (["--concurrency", "8", "--worker-concurrency", "16"], 8),  # the command's own flag wins
        ([], Settings().worker_concurrency),
    ],
)
def test_worker_concurrency_by_either_flag(flags: list[str], expected: int) -> None:
    args = build_parser().parse_args(["worker", *flags])
    assert command_settings(args).worker_concurrency == expected


@pytest.mark.parametrize(
    ("raw", "expected_ms"),
    [
        ("1767225600", 1767225600000),
        ("1767225600.5", 1767225600500),
        ("2026-01-01T08:00:00+08:00", 1767225600000),
        ("2026-01-01T00:00:00Z", 1767225600000),
    ],
)
def test_one_time_parser(raw: str, expected_ms: int) -> None:
    assert clock.parse_instant_ms(raw, "--since") == expected_ms


@pytest.mark.parametrize("raw", ["2026-01-01T08:00:00", "yesterday", "nan", "-5", "1e9", ""])
def test_the_time_parser_refuses_what_has_no_zone_or_is_not_a_time(raw: str) -> None:
    with pytest.raises(clock.BadInstant, match="--since"):
        clock.parse_instant_ms(raw, "--since")


@pytest.mark.parametrize(
    "argv",
    [
        ["reconcile", "--since", "2026-11-24T00:00:00"],  # reconcile read it in the host's zone
        ["reconcile", "--until", "not-a-time"],  # reconcile let ValueError escape as a traceback
        ["dlq", "list", "--since", "2026-11-24T00:00:00"],
    ],
)
def test_both_commands_refuse_a_time_without_zone_alike(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before Redis is asked (the URL here answers nothing): exit 2, one line naming the flag."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--redis-url", "redis://127.0.0.1:1/0"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--since" in err or "--until" in err
    assert "Traceback" not in err
