"""The committed dashboard is the builder's output, and every panel has a unit and well-formed queries."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType
from typing import Any

from tests.observability.tools import ROOT


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
