"""The committed dashboard is the builder's output, every panel has a unit and well-formed queries, and the
JSON type-checks against Grafana's own types (`@grafana/schema`, with `tsc`)."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.observability.tools import ROOT

# Grafana's types and the TypeScript compiler, installed by npm on first use and kept (build/ is ignored)
GRAFANA_TYPES = ROOT / "build" / "grafana-schema"
NPM_PACKAGES = ("@grafana/schema@13", "typescript@7")  # the majors the check was written against
NPM_INSTALL_S = 90  # a first install takes seconds; the test's own timeout is 120 s
# what npm says when it cannot reach the registry (no network, no DNS, a proxy refusing)
_OFFLINE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|network"
)


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", ROOT / "grafana" / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panels() -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = builder().dashboard()["panels"]
    return [panel for panel in found if panel["type"] != "row"]


def test_committed_json_is_the_builders_output() -> None:
    committed = (ROOT / "grafana" / "dashboards" / "pushgw.json").read_text(encoding="utf-8")
    assert committed == builder().render(), "run: python grafana/build_dashboard.py"


def test_fixed_uid_and_ids_and_templated_datasource_and_instance() -> None:
    board = builder().dashboard()
    assert board["uid"] == "pushgw-main"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["instance"]["includeAll"] is True


def test_every_panel_has_a_unit_the_datasource_variable_and_rate_interval() -> None:
    for panel in panels():
        title = panel["title"]
        assert panel["fieldConfig"]["defaults"]["unit"], title
        assert panel["datasource"]["uid"] == "${datasource}", title
        for target in panel["targets"]:
            expr = target["expr"]
            assert '"$instance"' in expr, (title, expr)
            if "rate(" in expr or "increase(" in expr:
                assert "[$__rate_interval]" in expr or "[$__range]" in expr, (title, expr)


def test_the_dashboard_answers_the_issues_questions() -> None:
    rows = [panel["title"] for panel in builder().dashboard()["panels"] if panel["type"] == "row"]
    assert [title.split(":")[0].split(" ")[0] for title in rows] == [
        "SLO",
        "Ingress",
        "Pipeline",
        "Delivery",
        "WeChat",
        "Saturation",
    ]


def test_provisioning_points_at_the_dashboard_and_the_datasource_uid() -> None:
    datasources = (ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "uid: pushgw-prometheus" in datasources
    assert json.loads(builder().render())["templating"]["list"][0]["current"]["value"] == "pushgw-prometheus"


def _tsc() -> Path:
    """The cached `tsc` (with @grafana/schema beside it), installed on first use. Skips only when node or npm
    is missing, or npm cannot reach its registry; any other failure of the install fails the test."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are not installed: the dashboard is not checked against @grafana/schema")
    tsc = GRAFANA_TYPES / "node_modules" / ".bin" / "tsc"
    if tsc.exists() and (GRAFANA_TYPES / "node_modules" / "@grafana" / "schema" / "package.json").exists():
        return tsc
    # quiet, and quick to give up on a registry it cannot reach (npm's own retries take minutes)
    options = (
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        "--fetch-retries=1",
        "--fetch-retry-mintimeout=1000",
        "--fetch-retry-maxtimeout=5000",
    )
    args = [npm, "install", "--prefix", str(GRAFANA_TYPES), *options, *NPM_PACKAGES]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=NPM_INSTALL_S, check=False)
    except subprocess.TimeoutExpired:
        pytest.skip(f"npm install did not finish in {NPM_INSTALL_S} s: its registry is out of reach")
    said = (done.stdout + done.stderr).strip()[-2000:]
    offline = [line for line in said.splitlines() if _OFFLINE.search(line)]
    if done.returncode != 0 and offline:
        pytest.skip(f"npm cannot reach its registry, so @grafana/schema is not installed: {offline[0]}")
    assert done.returncode == 0, f"npm install {' '.join(NPM_PACKAGES)} failed:\n{said}"
    return tsc


def test_the_dashboard_satisfies_grafanas_own_dashboard_type(tmp_path: Path) -> None:
    """`<the committed JSON> satisfies Dashboard` compiles: every field is one Grafana knows, with a value of
    its type (an object literal gets TypeScript's excess-property check). One exception, exactly: the
    `definition` of the query variable `instance`, which Grafana's own exports carry and its schema omits."""
    tsc = _tsc()
    board = json.loads((ROOT / "grafana" / "dashboards" / "pushgw.json").read_text(encoding="utf-8"))
    [instance] = [variable for variable in board["templating"]["list"] if variable["name"] == "instance"]
    assert instance["type"] == "query" and isinstance(instance.pop("definition"), str)
    literal = json.dumps(board, indent=2, ensure_ascii=False)
    source = f"export const board = {literal} satisfies Dashboard;\n"
    source = 'import type { Dashboard } from "@grafana/schema";\n\n' + source
    (tmp_path / "dashboard.ts").write_text(source, encoding="utf-8")
    options = {"strict": True, "noEmit": True, "module": "esnext", "moduleResolution": "bundler"}
    config = {"compilerOptions": {**options, "target": "es2022", "skipLibCheck": True, "types": []}}
    (tmp_path / "tsconfig.json").write_text(
        json.dumps({**config, "files": ["dashboard.ts"]}), encoding="utf-8"
    )
    (tmp_path / "node_modules").symlink_to(GRAFANA_TYPES / "node_modules", target_is_directory=True)

    done = subprocess.run(
        [str(tsc), "-p", str(tmp_path / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the dashboard does not satisfy @grafana/schema's Dashboard:\n{done.stdout}"
