"""The only way an account number, an openid or free text is ever shown: masked, invisible characters gone."""

from __future__ import annotations

import unicodedata


def account_tail(account: str) -> str:
    """The last 4 digits, as a template shows them: 尾号1234."""
    return f"尾号{account[-4:]}"


# What shows nothing, or shows what it is not: controls (Cc), format characters (Cf: zero-width space,
# joiners, word joiner, bidi overrides and isolates, BOM, soft hyphen), line and paragraph separators
# (Zl, Zp), surrogates, private-use and unassigned code points (Cs, Co, Cn) ...
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# ... and Unicode's other default-ignorable code points (DerivedCoreProperties.txt), which are letters or
# marks by category: the Hangul fillers (a "letter" that would split a number unseen), the combining grapheme
# joiner, Khmer inherent vowels, Mongolian and other variation selectors.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)


def is_hidden(char: str) -> bool:
    """Whether one character shows nothing (or nothing reliable) to a reader."""
    if unicodedata.category(char) in _HIDDEN_CATEGORIES:
        return True
    point = ord(char)
    return any(low <= point <= high for low, high in _IGNORABLE_RANGES)


class _Deletions(dict[int, int | None]):
    """A `str.translate` table deleting what `is_hidden` names: filled as code points are met, so that text
    costs one C-level lookup per character (it runs on every event at ingress). Only the BMP is kept, so
    hostile input cannot grow it past 64 Ki entries; rarer code points are judged each time."""

    def __missing__(self, point: int) -> int | None:
        kept = None if is_hidden(chr(point)) else point
        if point <= 0xFFFF:
            self[point] = kept
        return kept


_DELETIONS = _Deletions()


def visible(text: str) -> str:
    """`text` without its invisible characters (`is_hidden`)."""
    if text.isascii() and text.isprintable():
        return text
    return text.translate(_DELETIONS)


def _number_end(text: str, start: int) -> tuple[int, list[str]]:
    """From the digit at `start`: the index after the number's last digit, and its digits. A number goes on
    through separators (anything that is neither a letter nor a digit) as long as another digit follows."""
    digits: list[str] = []
    end = index = start
    while index < len(text) and not text[index].isalpha():
        if text[index].isdigit():
            digits.append(text[index])
            end = index + 1
        index += 1
    return end, digits


def mask_digit_runs(text: str) -> str:
    """Free text (a counterparty) as it may be shown: without invisible characters (`visible`), and with any
    number of 5 or more digits showing only its last 4 (****1234).

    A number is what a reader reads as one: digits of any script ("６２２２", "٦٢٢٢" are digits too)
    grouped by any run of characters that are neither letters nor digits ("6222 0202", "6222.0202",
    "6222/0202", "6222_0202", "6222 - 0202"). Invisible characters go first: none can split a number unseen.
    Idempotent: masked text masks to itself."""
    text = visible(text)
    if not any(map(str.isdigit, text)):
        return text
    shown: list[str] = []
    index = 0
    while index < len(text):
        if not text[index].isdigit():
            shown.append(text[index])
            index += 1
            continue
        end, digits = _number_end(text, index)
        shown.append(text[index:end] if len(digits) <= 4 else "****" + "".join(digits[-4:]))
        index = end
    return "".join(shown)


def mask_account(account: str) -> str:
    """For logs and errors: ****1234."""
    return f"****{account[-4:]}"


def mask_openid(openid: str) -> str:
    """For logs: the first 4 characters and the length, never the whole openid."""
    return f"{openid[:4]}…({len(openid)})"
