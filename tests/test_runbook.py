"""The runbook says what is true: every log line it quotes is one the code writes, and the operator commands
and settings it names exist (its steps' drills are listed in its last section, "Drills")."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

from gateway.cli import build_parser, flag_name
from gateway.core.settings import setting_specs

ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "docs" / "runbook.md"
_LOG_METHODS = {"debug", "info", "warning", "error", "exception", "critical", "log"}
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*\d*(?:\.\d+)?[sdifr]")
# a quoted span is a log line when the sentence before it says so (log, logs, logged, log line)
_SAYS_LOG = re.compile(r"\blog(?:s|ged| lines?)?\b[^.`]*$|\blog(?:s|ged)?\s+[^.]*$", re.IGNORECASE)
_MESSAGE = re.compile(r"[a-z][a-z0-9 _:|<>.,'()-]*")


def log_formats() -> set[str]:
    """The format string of every logging call in gateway/ and workers/ (the first str argument)."""
    formats: set[str] = set()
    for package in ("gateway", "workers"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in _LOG_METHODS:
                    continue
                texts = [
                    a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
                ]
                if texts:
                    formats.add(texts[0])
    return formats


def quoted_log_lines(text: str) -> list[str]:
    """Backquoted spans the runbook calls log lines (the sentence before the span mentions logs)."""
    found = []
    for match in re.finditer(r"`([^`]+)`", text):
        span = " ".join(match[1].split())
        sentence = re.split(r"[.!?]\s|\*\*|\n\n", text[: match.start()])[-1]
        if _SAYS_LOG.search(sentence) and _MESSAGE.fullmatch(span) and " " in span:
            found.append(span)
    return found


def _variants(quoted: str) -> list[str]:
    """The concrete lines a quote stands for: `<errcode>` is any value, `a|b` either word, `...` any end."""
    quoted = quoted.removesuffix("...").strip()
    quoted = re.sub(r"<[^>]+>", "VALUE", quoted)
    words = [word.split("|") for word in quoted.split(" ")]
    variants = [""]
    for choices in words:
        variants = [f"{done} {choice}".strip() for done in variants for choice in choices]
    return variants


def _written_by(line: str, fmt: str) -> bool:
    """Whether `fmt` writes `line` or a line that starts with it (a quote may end early)."""
    for end in range(
        len(fmt), 0, -1
    ):  # every prefix of the format (one cut in a placeholder matches nothing)
        cut = fmt[:end]
        pattern = "".join(
            re.escape(piece) if index % 2 == 0 else "[^ ]+"  # a value: one word (a status, an errcode)
            for index, piece in enumerate(re.split(f"({_PLACEHOLDER.pattern})", cut))
        )
        if re.fullmatch(pattern, line):
            return True
    return False


def test_the_runbook_quotes_log_lines() -> None:
    """The heuristic finds the quoted lines (a change to the wording must not silently drop the check)."""
    quoted = quoted_log_lines(RUNBOOK.read_text(encoding="utf-8"))
    for expected in (
        "waiting for redis",
        "delivery entry left pending for reclaim",
        "access token refresh failed: <errcode>",
        "refusing redis until its data epoch is back or acknowledged",
        "worker stopped",
        "gateway draining",
    ):
        assert expected in quoted, (expected, quoted)


def test_every_log_line_the_runbook_quotes_is_written_by_the_code() -> None:
    formats = log_formats()
    missing = [
        quoted
        for quoted in quoted_log_lines(RUNBOOK.read_text(encoding="utf-8"))
        for line in _variants(quoted)
        if not any(_written_by(line, fmt) for fmt in formats)
    ]
    assert not missing, f"the runbook quotes log lines no code writes: {missing}"


def test_every_operator_command_and_setting_the_runbook_names_exists() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    [subcommands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    commands = set(subcommands.choices)
    for named in re.findall(r"`pushgw ([a-z]+)", text):
        assert named in commands, named
    variables = {spec.metadata["env"] for spec in setting_specs()} | {"PUSHGW_REDIS_PASSWORD"}  # compose's
    for variable in re.findall(r"PUSHGW_[A-Z_]+[A-Z]", text):
        assert variable in variables or variable.startswith("PUSHGW_SIM_"), variable
    flags = {flag_name(spec.name) for spec in setting_specs()}
    assert "--redis-url" in flags and "--gateway-url" in flags
