"""The Dockerfile passes hadolint and keeps its shape: multi-stage, non-root, HEALTHCHECK, exec form, its base
a build argument. `make image-check` (scripts/image-check, opt-in) builds and runs it for real."""

from __future__ import annotations

import re

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


def test_the_base_image_is_a_build_argument() -> None:
    """Every stage starts from PYTHON_IMAGE, declared before the first FROM; its default is the official
    slim Python image, tagged (`make image-check` passes one it makes from Debian's packages)."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    first_from = next(index for index, line in enumerate(lines) if line.startswith("FROM "))
    args = dict(
        line.removeprefix("ARG ").split("=", 1) for line in lines[:first_from] if line.startswith("ARG ")
    )
    assert re.fullmatch(r"python:3\.1[1-9]-slim", args["PYTHON_IMAGE"]), args
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert stages == ["${PYTHON_IMAGE}"] * len(stages)


def test_local_state_stays_out_of_the_build_context() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "build"} <= ignored


def test_the_image_check_is_opt_in() -> None:
    """`make image-check` exists and runs the script; `make test` (the README's and CI's command) does not."""
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^image-check:.*\n\t(.+)$", makefile, re.MULTILINE)
    assert target is not None and target.group(1) == "scripts/image-check"
    assert (ROOT / "scripts" / "image-check").stat().st_mode & 0o111, "executable"
    test = re.search(r"^test:(.*)$", makefile, re.MULTILINE)
    assert test is not None and "image-check" not in test.group(1)
    assert "make image-check" in (ROOT / "README.md").read_text()
