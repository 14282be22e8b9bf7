"""The only way an account number or an openid is ever shown: masked."""

import re


def account_tail(account: str) -> str:
    """The last 4 digits, as a template shows them: 尾号1234."""
    return f"尾号{account[-4:]}"


# one number as a reader reads it: digits of any script (not only ASCII: "６２２２" is a card number too),
# grouped by spaces or dashes ("6222 0202 0000 1234")
_NUMBER = re.compile(r"\d(?:[\s\-\u2010-\u2015\u2212\uff0d]*\d)*")


def _mask_number(match: re.Match[str]) -> str:
    digits = [char for char in match[0] if char.isdigit()]
    return match[0] if len(digits) <= 4 else "****" + "".join(digits[-4:])


def mask_digit_runs(text: str) -> str:
    """Free text (a counterparty) may carry an account or card number: a number of 5 or more digits, however
    grouped, shows only its last 4 (****1234)."""
    return _NUMBER.sub(_mask_number, text)


def mask_account(account: str) -> str:
    """For logs and errors: ****1234."""
    return f"****{account[-4:]}"


def mask_openid(openid: str) -> str:
    """For logs: the first 4 characters and the length, never the whole openid."""
    return f"{openid[:4]}…({len(openid)})"
