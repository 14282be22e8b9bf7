"""The packaged templates: the ids the gateway ships, their keys and categories, and the default app."""

from __future__ import annotations

from wechatsim.catalog import default_apps, load_templates
from wechatsim.config import SimConfig
from wechatsim.rules import category_of, check_data

ACCOUNT_CHANGE_KEYS = ("thing1", "time2", "phrase3", "amount4", "amount5", "thing6")
EXPECTED = {
    "Tq1Kx0dEbitAcctChangeNotice000000000000001": ("账户变动提醒", ACCOUNT_CHANGE_KEYS),
    "Tq1Kx0CreditAcctChangeNotice00000000000002": ("入账提醒", ACCOUNT_CHANGE_KEYS),
    "Tq1Kx0CardPurchaseNotice000000000000000003": ("信用卡消费提醒", ACCOUNT_CHANGE_KEYS),
    "Tq1Kx0TransferNotice00000000000000000000004": ("转账提醒", ACCOUNT_CHANGE_KEYS),
    "Tq1Kx0AtmWithdrawalNotice0000000000000005": ("取现提醒", ACCOUNT_CHANGE_KEYS),
    "Tq1Kx0DigestNotice0000000000000000000000006": (
        "动账汇总提醒",
        ("thing1", "time2", "thing3", "amount4", "amount5"),
    ),
}


def test_templates_have_the_shipped_ids_titles_and_keys() -> None:
    templates = load_templates()
    assert {tid: (t.title, t.keys) for tid, t in templates.items()} == EXPECTED
    for template in templates.values():
        assert (template.primary_industry, template.deputy_industry) == ("IT科技", "银行")
        assert all(category_of(key) is not None for key in template.keys)


def test_each_example_passes_its_own_rules() -> None:
    for template in load_templates().values():
        values = [line.split("：", 1)[1] for line in template.example.splitlines()]
        data: dict[str, object] = {k: {"value": v} for k, v in zip(template.keys, values, strict=True)}
        assert check_data(template.keys, data) is None, template.template_id


def test_default_app() -> None:
    assert default_apps() == {"wx_demo_app": "demo_secret"}
    assert SimConfig().apps == {"wx_demo_app": "demo_secret"}


def test_config_repr_hides_secrets() -> None:
    assert "demo_secret" not in repr(SimConfig())
