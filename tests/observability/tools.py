"""External tools the observability tests drive (promtool, prometheus, hadolint): found, or a clear failure.

.ci/run installs Debian's `prometheus` package (promtool and prometheus); hadolint comes with the dev extra.
A missing tool fails the test that needs it: nothing is skipped silently.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def tool(name: str) -> str:
    """The path of `name` on PATH or next to this Python; raises AssertionError saying how to install it."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        hint = "pip install -e '.[dev]'" if name == "hadolint" else "apt-get install -y prometheus"
        raise AssertionError(f"{name} is not installed ({hint}; .ci/run installs it)")
    return found


def run_tool(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    """Run a tool to completion; its output is returned, never printed."""
    return subprocess.run(
        [tool(args[0]), *args[1:]],
        input=stdin.decode(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
