"""The project's own rules: settings documented as built, dependency direction, one Settings."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from gateway.cli import build_parser, flag_name, settings_table
from gateway.core.settings import ConfigError, RateLimit, Settings, setting_specs

ROOT = Path(__file__).resolve().parent.parent
CLI_MODULES = {"gateway/cli.py", "gateway/dev.py"}  # the only gateway modules importing other sides, lazily


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


OURS = {"gateway", "workers", "loadtest", "wechatsim", "tests"}


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module, lazily) of each import of ours in the file: `lazily` when it runs inside a function."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, lazily: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name, lazily) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, lazily))
        inner = lazily or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(path.read_text(encoding="utf-8")), False)
    return [(module, lazily) for module, lazily in found if module.split(".")[0] in OURS]


def _allowed(relative: str, module: str, lazily: bool) -> bool:
    """The dependency direction: gateway.core is what every side shares and imports only itself; the rest
    of gateway never imports workers, loadtest or wechatsim, except lazily (inside functions) in the CLI
    modules; workers and loadtest import gateway.core only (never the ingress) and themselves; wechatsim
    imports nothing of ours. Nothing imports the tests."""
    package = relative.split("/")[0]
    root = module.split(".")[0]
    core = module == "gateway.core" or module.startswith("gateway.core.")
    if relative.startswith("gateway/core/"):
        return core
    if package == "gateway":
        return root == "gateway" or (relative in CLI_MODULES and lazily and root != "tests")
    if package in {"workers", "loadtest"}:
        return core or root == package
    return root == package  # wechatsim


@pytest.mark.parametrize("package", ["gateway", "workers", "loadtest", "wechatsim"])
def test_dependency_direction(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT).as_posix()} imports {module}" + (" (lazily)" if lazily else "")
        for path in sorted((ROOT / package).rglob("*.py"))
        for module, lazily in _imports(path)
        if not _allowed(path.relative_to(ROOT).as_posix(), module, lazily)
    ]
    assert not wrong, wrong


def test_dependency_rule_catches_each_way_back_up() -> None:
    assert not _allowed("gateway/app.py", "workers.worker", lazily=True)
    assert not _allowed("gateway/dev.py", "workers.worker", lazily=False)  # `pushgw gateway` loads no worker
    assert _allowed("gateway/cli.py", "loadtest.bench", lazily=True)
    assert not _allowed("gateway/core/redis.py", "gateway.auth", lazily=False)
    assert not _allowed("workers/delivery.py", "gateway.context", lazily=False)
    assert not _allowed("loadtest/bench.py", "gateway.auth", lazily=True)
    assert not _allowed("loadtest/smoke.py", "gateway.dev", lazily=False)
    assert _allowed("loadtest/payloads.py", "gateway.core.signing", lazily=False)
    assert not _allowed("wechatsim/app.py", "gateway.core.keys", lazily=True)


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
