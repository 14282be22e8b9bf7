"""`classify`: every answer of WECHAT_API.md s.3 maps to the action the table names."""

from __future__ import annotations

import pytest

from workers.wechat import Answer, Outcome, Verdict, Wait, classify

# (errcode, outcome, wait, new binding state) straight from the s.3 table
TABLE: list[tuple[int, Outcome, Wait, str | None]] = [
    (0, Outcome.DELIVERED, Wait.BACKOFF, None),
    (-1, Outcome.RETRY, Wait.BACKOFF, None),
    (40001, Outcome.REFRESH_TOKEN, Wait.BACKOFF, None),
    (40014, Outcome.REFRESH_TOKEN, Wait.BACKOFF, None),
    (42001, Outcome.REFRESH_TOKEN, Wait.BACKOFF, None),
    (41001, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (40003, Outcome.PERMANENT, Wait.BACKOFF, "invalid"),
    (43004, Outcome.PERMANENT, Wait.BACKOFF, "unsubscribed"),
    (43019, Outcome.PERMANENT, Wait.BACKOFF, "blocked"),
    (40036, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (40037, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (47003, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (47001, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (44002, Outcome.DEAD_LETTER, Wait.BACKOFF, None),
    (45009, Outcome.RETRY, Wait.QUOTA_RESET, None),
    (45011, Outcome.RETRY, Wait.NEXT_MINUTE, None),
    (48001, Outcome.RETRY, Wait.SUSPEND, None),
    (48004, Outcome.RETRY, Wait.SUSPEND, None),
    (50002, Outcome.RETRY, Wait.SUSPEND, None),
]


@pytest.mark.parametrize(
    ("errcode", "outcome", "wait", "binding_state"), TABLE, ids=[str(r[0]) for r in TABLE]
)
def test_errcode_table(errcode: int, outcome: Outcome, wait: Wait, binding_state: str | None) -> None:
    verdict = classify(Answer(errcode=errcode, http_status=200))
    assert (verdict.outcome, verdict.wait, verdict.binding_state) == (outcome, wait, binding_state)
    assert Answer(errcode=errcode).label == str(errcode)


def test_only_busy_counts_against_the_circuit_among_errcodes() -> None:
    failing = {code for code, *_ in TABLE if classify(Answer(errcode=code)).breaker_failure}
    assert failing == {-1}


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_http_5xx_is_retried_and_counts_against_the_circuit(status: int) -> None:
    answer = Answer(http_status=status)
    assert classify(answer) == Verdict(Outcome.RETRY, breaker_failure=True)
    assert answer.label == f"http_{status}"


@pytest.mark.parametrize("transport", ["timeout", "connection", "bad_response"])
def test_transport_failures_are_retried_and_count_against_the_circuit(transport: str) -> None:
    answer = Answer(transport=transport)
    assert classify(answer) == Verdict(Outcome.RETRY, breaker_failure=True)
    assert answer.label == transport


@pytest.mark.parametrize("errcode", [99999, 40164, -2])
def test_unknown_errcode_is_retried_with_a_bounded_label(errcode: int) -> None:
    answer = Answer(errcode=errcode, http_status=200)
    assert classify(answer) == Verdict(Outcome.RETRY)
    assert answer.label == "other"


@pytest.mark.parametrize("status", [400, 404, 429])
def test_http_4xx_without_errcode_is_retried_not_counted(status: int) -> None:
    assert classify(Answer(http_status=status)) == Verdict(Outcome.RETRY)


@pytest.mark.parametrize(
    ("answer", "unclear"),
    [
        (Answer(transport="timeout"), True),
        (Answer(transport="connection"), True),
        (Answer(transport="bad_response"), True),
        (Answer(http_status=502), True),
        (Answer(transport="token_connection"), False),  # no token: nothing was sent
        (Answer(http_status=404), False),
        (Answer(errcode=-1, http_status=200), False),
        (Answer(errcode=0, msgid="1", http_status=200), False),
    ],
    ids=lambda value: value if isinstance(value, bool) else value.label,
)
def test_unclear_answers_are_those_after_which_wechat_may_have_sent(answer: Answer, unclear: bool) -> None:
    assert answer.unclear is unclear
