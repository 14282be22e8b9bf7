"""The account's registered templates and the default apps, loaded from the packaged templates.json."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import orjson

__all__ = ["Template", "default_apps", "load_templates", "template_from_json"]

_KEY_RE = re.compile(r"\{\{(\w+)\.DATA\}\}")
_TEMPLATE_FIELDS = ("template_id", "title", "primary_industry", "deputy_industry", "content", "example")


@dataclass(frozen=True, slots=True)
class Template:
    """One private template as `get_all_private_template` lists it; its keys are read from `content`."""

    template_id: str
    title: str
    primary_industry: str
    deputy_industry: str
    content: str
    example: str

    @property
    def keys(self) -> tuple[str, ...]:
        """The data keys (without `.DATA`) in the order the content shows them."""
        return tuple(_KEY_RE.findall(self.content))

    def to_json(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in _TEMPLATE_FIELDS}


# read at import: the simulator's state is built inside a running event loop, where a file read blocks it
_TEXT = resources.files(__package__).joinpath("templates.json").read_bytes()


@cache
def _raw() -> dict[str, object]:
    loaded = orjson.loads(_TEXT)
    if not isinstance(loaded, dict):
        raise TypeError("templates.json must hold an object")
    return loaded


def template_from_json(entry: object) -> Template:
    """One template from its `get_all_private_template` JSON; raises TypeError naming the fields."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(f), str) for f in _TEMPLATE_FIELDS):
        raise TypeError(f"templates.json: each template needs string fields {_TEMPLATE_FIELDS}")
    return Template(**{f: entry[f] for f in _TEMPLATE_FIELDS})


def load_templates() -> dict[str, Template]:
    """The packaged templates by template_id, in file order (a fresh dict per call)."""
    entries = _raw().get("templates")
    if not isinstance(entries, list):
        raise TypeError("templates.json: 'templates' must be a list")
    templates = [template_from_json(entry) for entry in entries]
    return {t.template_id: t for t in templates}


def default_apps() -> dict[str, str]:
    """The appid -> secret pairs the simulator accepts when none are configured (a fresh dict per call)."""
    apps = _raw().get("default_apps")
    if not isinstance(apps, dict) or not all(isinstance(v, str) for v in apps.values()):
        raise TypeError("templates.json: 'default_apps' must map appid to secret")
    return {str(appid): str(secret) for appid, secret in apps.items()}
