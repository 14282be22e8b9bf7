"""The project's own rules: settings documented as built, dependency direction, one Settings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.cli import build_parser, flag_name, settings_table
from gateway.core.settings import ConfigError, RateLimit, Settings, setting_specs

ROOT = Path(__file__).resolve().parent.parent
CLI_MODULES = {"gateway/cli.py", "gateway/dev.py"}  # the only gateway modules that import workers (lazily)


def test_readme_settings_table_is_the_generated_one() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("<!-- settings-table")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /settings-table -->")
    assert readme[start:end].strip() == settings_table()


def test_every_setting_is_a_flag_of_gateway_and_worker() -> None:
    parser = build_parser()
    for command in (["gateway"], ["worker"], ["dlq", "list"], ["events", "show", "E1"]):
        args = parser.parse_args(command)
        for spec in setting_specs():
            assert hasattr(args, spec.name), (command, flag_name(spec.name))


def test_readme_opens_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [part.split("```", 1)[0].strip() for part in readme.split("```sh\n")[1:3]]
    assert blocks == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_contract_is_in_the_repository_and_every_doc_link_resolves() -> None:
    """A clone has no ../shared: the contract lives in docs/, and no README or docs link leaves the tree."""
    assert "## Stable interfaces" in (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    assert "## 5. Safe mode" in (ROOT / "docs" / "wechat_api.md").read_text(encoding="utf-8")
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        assert "../shared" not in text, page.name
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
            assert (page.parent / target).is_file(), (page.name, target)


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", ["gateway", "workers", "wechatsim"])
def test_dependency_direction(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        imported = _imports(path)
        if package == "wechatsim":
            assert not {m for m in imported if m.split(".")[0] in {"gateway", "workers", "loadtest"}}, (
                relative
            )
        elif package == "workers":
            ingress = {m for m in imported if m.startswith("gateway.") and not m.startswith("gateway.core")}
            assert not ingress, relative
        elif relative not in CLI_MODULES and relative.startswith("gateway/"):
            assert not {m for m in imported if m.split(".")[0] == "workers"}, relative
    if package == "gateway":  # and there only inside functions: `pushgw gateway` never loads the workers
        for relative in CLI_MODULES - {"gateway/dev.py"}:
            tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
            top = {n.module for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            assert not {m for m in top if m.split(".")[0] == "workers"}, relative


def test_operator_commands_live_in_gateway_ops_and_the_dlq_cli_beside_the_dead_letters() -> None:
    """docs/style.md's layout: operator commands in gateway/ops/, the dlq CLI in workers/."""
    assert {p.name for p in (ROOT / "gateway" / "ops").glob("*.py")} >= {
        "reconcile.py",
        "epoch.py",
        "lookups.py",
    }
    assert (ROOT / "workers" / "dlq_cli.py").is_file()
    for old in ("gateway/reconcile.py", "gateway/epoch_cli.py", "gateway/dlq_cli.py"):
        assert not (ROOT / old).exists(), old


def test_only_settings_reads_the_environment() -> None:
    allowed = {"gateway/cli.py", "gateway/core/settings.py"}
    for package in ("gateway", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            relative = path.relative_to(ROOT).as_posix()
            if relative not in allowed:
                assert "os.environ" not in path.read_text(encoding="utf-8"), relative


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PUSHGW_RATE_LIMIT", "five"),
        ("PUSHGW_RATE_POLICY", "drop"),
        ("PUSHGW_MAX_ATTEMPTS", "0"),
        ("PUSHGW_REDIS_URL", "http://x"),
        ("PUSHGW_API_KEYS", "nocolon"),
        ("PUSHGW_OPEN_INGRESS", "maybe"),
        ("PUSHGW_EVENT_TTL_S", "3600"),
    ],
)
def test_a_bad_setting_names_its_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: value})


def test_secrets_are_never_shown() -> None:
    settings = Settings.from_env(
        {"PUSHGW_API_KEYS": "cbs:s3cr3t-value", "PUSHGW_WECHAT_SECRET": "app-s3cr3t"}
    )
    assert settings.api_keys == {"cbs": "s3cr3t-value"}
    assert "s3cr3t" not in repr(settings)
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({"PUSHGW_API_KEYS": "cbs:"})
    assert "cbs" not in str(raised.value).split(":", 1)[1]


def test_settings_parse_and_override() -> None:
    settings = Settings.from_env({"PUSHGW_RATE_LIMIT": "10/30", "PUSHGW_SHARDS": "4"}, shards=2)
    assert settings.rate_limit == RateLimit(10, 30)
    assert settings.shards == 2
