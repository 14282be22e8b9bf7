"""Realistic core-banking events and signed request headers, shared by the benchmark and Locust."""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone
from itertools import count
from typing import Any

from gateway.core import signing

TYPES = (
    "debit",
    "credit",
    "card_purchase",
    "transfer_out",
    "transfer_in",
    "atm_withdrawal",
    "loan_repayment",
    "refund",
)
TYPE_WEIGHTS = (20, 10, 35, 10, 8, 7, 5, 5)
COUNTERPARTIES = ("Starbucks Shanghai", "美团外卖", "China Mobile", "State Grid", "JD.com", "Didi Chuxing")
BEIJING = timezone(timedelta(hours=8))


def customer_id(index: int) -> str:
    return f"C{index:07d}"


def openid_of(index: int) -> str:
    return f"oBench{index:022d}"


class EventFactory:
    """Events with unique ids; customers drawn from a skewed (Zipf-like) distribution so hot ones exist."""

    def __init__(self, customers: int, seed: int = 1, prefix: str = "BENCH") -> None:
        self._random = random.Random(seed)
        self._customers = customers
        self._ids = count()
        self._prefix = f"{prefix}-{int(time.time() * 1000)}"

    def customer(self) -> int:
        return min(int(self._random.paretovariate(1.2)) - 1, self._customers - 1)

    def event(self, customer: int | None = None) -> dict[str, Any]:
        rnd = self._random
        index = self.customer() if customer is None else customer
        amount = f"{rnd.lognormvariate(4.5, 1.3):.2f}"
        return {
            "event_id": f"{self._prefix}-{next(self._ids):010d}",
            "customer_id": customer_id(index),
            "account": f"62220202{index:08d}",
            "type": rnd.choices(TYPES, TYPE_WEIGHTS)[0],
            "amount": amount if amount != "0.00" else "0.01",
            "currency": "CNY",
            "balance": f"{rnd.uniform(0, 100000):.2f}",
            "occurred_at": datetime.now(BEIJING).isoformat(timespec="seconds"),
            "counterparty": rnd.choice(COUNTERPARTIES),
            "channel": rnd.choice(("POS", "ONLINE", "ATM", "MOBILE")),
        }


def signed_headers(key_id: str, secret: str, method: str, target: str, body: bytes) -> dict[str, str]:
    """JSON request headers signed by the ingress scheme (gateway/core/signing.py) for `method` `target`."""
    return {
        "Content-Type": "application/json",
        **signing.signed_headers(key_id, secret, method, target, body),
    }
