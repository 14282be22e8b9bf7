"""wechatsim stands alone: it imports nothing of ours, so a contract mismatch cannot hide in shared code."""

from __future__ import annotations

import ast
from pathlib import Path

import wechatsim

ALLOWED_THIRD_PARTY = {"aiohttp", "orjson", "prometheus_client", "cryptography"}  # cryptography: safe mode


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_wechatsim_imports_only_stdlib_aiohttp_orjson_prometheus() -> None:
    import sys

    package_dir = Path(wechatsim.__file__).parent
    for path in sorted(package_dir.glob("*.py")):
        foreign = _imported_roots(path) - set(sys.stdlib_module_names) - ALLOWED_THIRD_PARTY - {"wechatsim"}
        assert not foreign, f"{path.name} imports {sorted(foreign)}"
