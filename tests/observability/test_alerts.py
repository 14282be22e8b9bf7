"""Prometheus config and alert rules are valid; every alert has passing unit tests and a runbook entry."""

from __future__ import annotations

import re

import yaml

from gateway.core import metrics
from tests.observability.tools import DEPLOY, ROOT, run_tool


def _alerts() -> dict[str, dict[str, object]]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule}


def test_config_and_rules_are_valid() -> None:
    result = run_tool("promtool", "check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_unit_tests_pass() -> None:
    result = run_tool("promtool", "test", "rules", str(DEPLOY / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_in_the_unit_tests() -> None:
    tests = yaml.safe_load((DEPLOY / "alerts_test.yml").read_text())["tests"]
    checks = [check for test in tests for check in test.get("alert_rule_test", [])]
    for name in _alerts():
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name} is never shown to fire"
        assert any(not check["exp_alerts"] for check in mine), f"{name} is never shown to stay quiet"


def test_every_alert_has_a_runbook_entry_and_a_severity() -> None:
    runbook = (ROOT / "docs" / "runbook.md").read_text()
    anchors = {match.lower() for match in re.findall(r"^#+ .*?`?(Pushgw\w+)`?", runbook, re.MULTILINE)}
    for name, rule in _alerts().items():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        anchor = str(annotations["runbook"]).partition("#")[2]
        assert anchor in anchors, f"{name}: docs/runbook.md has no section for #{anchor}"
        labels = rule["labels"]
        assert isinstance(labels, dict) and labels["severity"] in {"critical", "warning"}


def test_slo_rules_use_the_histograms_slo_bucket() -> None:
    text = (DEPLOY / "alerts.yml").read_text()
    assert f'le="{metrics.SLO_DELIVERED_WITHIN_S}"' in text
    assert f"{metrics.SLO_DELIVERY_OBJECTIVE:g}" == "0.99" and "* 0.01)" in text
    assert f"{metrics.SLO_INGRESS_OBJECTIVE:g}" == "0.999" and "* 0.001)" in text
