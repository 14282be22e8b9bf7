"""The Dockerfile passes hadolint and keeps its shape: multi-stage, non-root, HEALTHCHECK, exec form."""

from __future__ import annotations

from tests.observability.tools import ROOT, run_tool


def test_hadolint_finds_nothing() -> None:
    result = run_tool("hadolint", "--failure-threshold", "style", str(ROOT / "Dockerfile"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_shape() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert sum(line.startswith("FROM ") for line in lines) >= 2, "multi-stage"
    user = [line for line in lines if line.startswith("USER ")]
    assert user and user[-1] not in {"USER root", "USER 0"}
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert any(line.startswith('ENTRYPOINT ["') for line in lines), "exec-form entrypoint"
