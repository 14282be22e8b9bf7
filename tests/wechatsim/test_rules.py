"""Category-template value rules: each category's valid and invalid values, directly and over HTTP."""

from __future__ import annotations

import pytest

from tests.wechatsim.conftest import Sim, debit_data, send_payload
from wechatsim.rules import CATEGORIES, category_of, check_data, value_ok

VALID = [
    ("thing", "尾号1234"),
    ("thing", "Starbucks Shanghai"),
    ("thing", "一" * 20),
    ("number", "12345"),
    ("number", "3.14"),
    ("number", "9" * 32),
    ("character_string", "CBS-20261122-000000001"),
    ("character_string", "A" * 32),
    ("amount", "1,234.56元"),
    ("amount", "$12.00"),
    ("amount", "¥1,534.56"),
    ("amount", "￥8"),
    ("amount", "€0.5"),
    ("amount", "£1,000,000"),
    ("amount", "1234567890"),
    ("amount", "12345678.90元"),
    ("time", "2026年11月22日 10:00"),
    ("time", "2026年11月22日"),
    ("time", "2026-11-22 10:00:00"),
    ("time", "2026-11-22 10:00"),
    ("time", "2026/11/22 10:00"),
    ("time", "10:00"),
    ("time", "10:00:59"),
    ("time", "11月22日 10:00"),
    ("time", "2026年11月22日 10:00~2026年11月22日 12:00"),
    ("phrase", "消费"),
    ("phrase", "转账支出"),
    ("phrase", "一二三四五"),
    ("phone_number", "+86 138-0000-0000"),
    ("phone_number", "95588"),
    ("name", "张三"),
    ("name", "阿卜杜·热合曼"),
    ("name", "John Smith"),
]

INVALID = [
    ("thing", "一" * 21),
    ("number", "12a"),
    ("number", "9" * 33),
    ("number", "-5"),
    ("character_string", "有中文"),
    ("character_string", "A" * 33),
    ("amount", "1,234.567,8"),
    ("amount", "12,34"),
    ("amount", "¥$12"),
    ("amount", "12345678901"),
    ("amount", "1,234,567,890.12"),
    ("amount", "十元"),
    ("amount", "12元5"),
    ("amount", "-12.00"),
    ("time", "yesterday"),
    ("time", "2026-13-01 10:00"),
    ("time", "2026年11月22日 25:00"),
    ("time", "1795000000"),
    ("time", "10:00~11:00~12:00"),
    ("phrase", "消费支出扣款"),
    ("phrase", "spend"),
    ("phrase", "消费1"),
    ("phone_number", "1" * 18),
    ("phone_number", "call me"),
    ("phone_number", "---"),
    ("name", "张" * 11),
    ("name", "A" * 21),
    ("name", "张三3"),
    ("name", "J0hn"),
]


@pytest.mark.parametrize(("category", "value"), VALID)
def test_valid_values_pass(category: str, value: str) -> None:
    assert value_ok(category, value)


@pytest.mark.parametrize(("category", "value"), INVALID)
def test_invalid_values_fail(category: str, value: str) -> None:
    assert not value_ok(category, value)


def test_every_category_has_cases() -> None:
    assert {c for c, _ in VALID} == CATEGORIES
    assert {c for c, _ in INVALID} == CATEGORIES


@pytest.mark.parametrize(
    ("key", "category"),
    [
        ("thing1", "thing"),
        ("amount14", "amount"),
        ("character_string7", "character_string"),
        ("phone_number2", "phone_number"),
        ("keyword1", None),
        ("first", None),
        ("thing", None),
    ],
)
def test_category_is_the_key_prefix(key: str, category: str | None) -> None:
    assert category_of(key) == category


def test_check_data_names_the_first_bad_key() -> None:
    keys = ("thing1", "amount2")
    assert check_data(keys, {"thing1": {"value": "ok"}, "amount2": {"value": "12.00元"}}) is None
    assert check_data(keys, {"thing1": {"value": "ok"}, "amount2": {"value": "x"}}) == (
        "argument invalid! data.amount2.value invalid"
    )
    assert check_data(keys, {"other3": {"value": "x"}}) == "argument invalid! data.other3.value invalid"


@pytest.mark.parametrize(
    ("key", "value", "errcode"),
    [
        ("time2", "2026-11-22 10:00:00", 0),
        ("time2", "10:00", 0),
        ("time2", "someday", 47003),
        ("amount4", "$12.00", 0),
        ("amount4", "12345678901元", 47003),
        ("thing6", "x" * 21, 47003),
        ("phrase3", "expense", 47003),
    ],
)
async def test_rules_apply_over_http(sim: Sim, key: str, value: str, errcode: int) -> None:
    token = await sim.token()
    body = await sim.send(token, send_payload(data=debit_data(**{key: value})))
    assert body["errcode"] == errcode
    if errcode:
        assert body["errmsg"].startswith(f"argument invalid! data.{key}.value invalid rid: ")
