"""WeChat's category-template value rules: which `data.<key>.value` each key's category accepts (47003)."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from datetime import datetime

__all__ = ["CATEGORIES", "category_of", "check_data", "value_ok"]

_KEY_RE = re.compile(r"^([a-z_]+?)(\d+)$")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff"
_AMOUNT_RE = re.compile(r"^[¥￥$€£]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?元?$")
_NUMBER_RE = re.compile(r"^[0-9]+(?:\.[0-9]+)?$")
_CHARACTER_STRING_RE = re.compile(r"^[ -~]{1,32}$")
_PHRASE_RE = re.compile(rf"^[{_HAN}]{{1,5}}$")
_PHONE_RE = re.compile(r"^[0-9+\- ]{1,17}$")
_NAME_HAN_RE = re.compile(rf"^[{_HAN}·]{{1,10}}$")
_NAME_LATIN_RE = re.compile(r"^[A-Za-z][A-Za-z ]{0,19}$")
_TIME_FORMATS = (
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
    "%Y年%m月%d日%H:%M",
    "%Y年%m月%d日",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y/%m/%d",
    "%m月%d日 %H:%M",
    "%m月%d日",
    "%H:%M:%S",
    "%H:%M",
)


def _digits(value: str) -> int:
    return sum(ch in "0123456789" for ch in value)


def _one_time(value: str) -> bool:
    for fmt in _TIME_FORMATS:
        try:
            datetime.strptime(value, fmt)  # only the shape matters, not the instant
        except ValueError:
            continue
        return True
    return False


def _time_ok(value: str) -> bool:
    parts = value.split("~")
    return len(parts) <= 2 and all(_one_time(part.strip()) for part in parts)


_RULES: dict[str, Callable[[str], bool]] = {
    "thing": lambda v: len(v) <= 20,
    "number": lambda v: _NUMBER_RE.match(v) is not None and _digits(v) <= 32,
    "character_string": lambda v: _CHARACTER_STRING_RE.match(v) is not None,
    "amount": lambda v: _AMOUNT_RE.match(v) is not None and _digits(v) <= 10,
    "time": _time_ok,
    "phrase": lambda v: _PHRASE_RE.match(v) is not None,
    "phone_number": lambda v: _PHONE_RE.match(v) is not None and _digits(v) > 0,
    "name": lambda v: _NAME_HAN_RE.match(v) is not None or _NAME_LATIN_RE.match(v) is not None,
}

CATEGORIES = frozenset(_RULES)


def category_of(key: str) -> str | None:
    """The category a key names by its prefix (`amount4` -> `amount`), or None for a non-category key."""
    match = _KEY_RE.match(key)
    if match is None or match.group(1) not in CATEGORIES:
        return None
    return match.group(1)


def value_ok(category: str, value: str) -> bool:
    """Whether a non-empty `value` is acceptable for `category` (one of CATEGORIES)."""
    return _RULES[category](value)


def _entry_error(key: str, entry: object, template_keys: Collection[str]) -> str | None:
    if key not in template_keys or not isinstance(entry, Mapping):
        return f"argument invalid! data.{key}.value invalid"
    value = entry.get("value")
    if not isinstance(value, str):
        return f"argument invalid! data.{key}.value invalid"
    if value == "":
        return f"argument invalid! data.{key}.value is empty"
    category = category_of(key)
    if category is not None and not value_ok(category, value):
        return f"argument invalid! data.{key}.value invalid"
    return None


def check_data(template_keys: Collection[str], data: Mapping[str, object]) -> str | None:
    """The 47003 errmsg (without rid) for the first bad entry of `data`, or None when all pass.

    A key the template lacks, an entry without a string `value`, an empty value or a value breaking its
    category's rule is bad. Template keys missing from `data` are allowed: WeChat shows them blank.
    """
    for key, entry in data.items():
        error = _entry_error(key, entry, template_keys)
        if error is not None:
            return error
    return None
