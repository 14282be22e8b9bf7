"""The only way an account number or an openid is ever shown: masked."""

import re


def account_tail(account: str) -> str:
    """The last 4 digits, as a template shows them: 尾号1234."""
    return f"尾号{account[-4:]}"


_DIGIT_RUN = re.compile(r"\d{5,}", re.ASCII)


def mask_digit_runs(text: str) -> str:
    """Free text (a counterparty) may carry an account or card number: keep the last 4 of any 5+ digit run."""
    return _DIGIT_RUN.sub(lambda match: "****" + match[0][-4:], text)


def mask_account(account: str) -> str:
    """For logs and errors: ****1234."""
    return f"****{account[-4:]}"


def mask_openid(openid: str) -> str:
    """For logs: the first 4 characters and the length, never the whole openid."""
    return f"{openid[:4]}…({len(openid)})"
