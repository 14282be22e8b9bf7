"""Access tokens: /cgi-bin/token rotation with overlap, stable_token reuse, renewal and force_refresh."""

from __future__ import annotations

import pytest

from tests.wechatsim.conftest import APPID, OTHER_APPID, SECRET, Sim, send_payload

TOKEN_PATH = "/cgi-bin/token"  # noqa: S105 - a URL path
STABLE_PATH = "/cgi-bin/stable_token"


async def _send_errcode(sim: Sim, token: str) -> int:
    errcode: int = (await sim.send(token, send_payload(client_msg_id=None)))["errcode"]
    return errcode


async def test_token_answers_token_and_ttl(sim: Sim) -> None:
    params = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
    status, body = await sim.get(TOKEN_PATH, **params)
    assert status == 200
    assert body["expires_in"] == 7200
    assert isinstance(body["access_token"], str) and len(body["access_token"]) > 100


async def test_each_token_call_issues_a_new_one_and_the_old_overlaps(sim: Sim) -> None:
    first = await sim.token()
    second = await sim.token()
    assert first != second
    assert await _send_errcode(sim, first) == 0
    sim.clock.advance(299)
    assert await _send_errcode(sim, first) == 0
    sim.clock.advance(2)
    assert await _send_errcode(sim, first) == 42001
    assert await _send_errcode(sim, second) == 0


async def test_token_expires_after_ttl(sim: Sim) -> None:
    token = await sim.token()
    sim.clock.advance(7199)
    assert await _send_errcode(sim, token) == 0
    sim.clock.advance(1)
    assert await _send_errcode(sim, token) == 42001


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"grant_type": "password", "appid": APPID, "secret": SECRET}, 40002),
        ({"appid": APPID, "secret": SECRET}, 40002),
        ({"grant_type": "client_credential", "appid": "wx_nobody", "secret": SECRET}, 40013),
        ({"grant_type": "client_credential", "appid": APPID, "secret": "wrong"}, 40125),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
        ({"grant_type": "client_credential", "appid": APPID}, 41004),
    ],
)
async def test_token_errors(sim: Sim, params: dict[str, str], errcode: int) -> None:
    status, body = await sim.get(TOKEN_PATH, **params)
    assert status == 200
    assert body["errcode"] == errcode
    assert " rid: " in body["errmsg"]
    assert "access_token" not in body
    assert (await sim.stats())["token_errcodes"] == {str(errcode): 1}


async def test_stable_token_is_the_same_while_valid(sim: Sim) -> None:
    first = await sim.stable_token()
    assert first["expires_in"] == 7200
    sim.clock.advance(1000)
    second = await sim.stable_token()
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == 6200


async def test_stable_token_is_renewed_in_the_last_overlap_and_the_old_lives_on(sim: Sim) -> None:
    first = await sim.stable_token()
    sim.clock.advance(7200 - 299)
    renewed = await sim.stable_token()
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 7200
    assert await _send_errcode(sim, first["access_token"]) == 0
    sim.clock.advance(299)
    assert await _send_errcode(sim, first["access_token"]) == 42001
    assert await _send_errcode(sim, renewed["access_token"]) == 0


async def test_stable_token_force_refresh_leaves_the_old_valid_for_the_overlap(sim: Sim) -> None:
    first = await sim.stable_token()
    forced = await sim.stable_token(force_refresh=True)
    assert forced["access_token"] != first["access_token"]
    assert (await sim.stable_token())["access_token"] == forced["access_token"]
    sim.clock.advance(299)
    assert await _send_errcode(sim, first["access_token"]) == 0
    sim.clock.advance(1)
    assert await _send_errcode(sim, first["access_token"]) == 42001
    assert await _send_errcode(sim, forced["access_token"]) == 0


async def test_stable_and_plain_tokens_are_separate(sim: Sim) -> None:
    stable = (await sim.stable_token())["access_token"]
    plain = await sim.token()
    await sim.token()
    assert plain != stable
    sim.clock.advance(400)
    assert await _send_errcode(sim, plain) == 42001
    assert await _send_errcode(sim, stable) == 0
    assert (await sim.stable_token())["access_token"] == stable


@pytest.mark.parametrize(
    ("raw", "errcode"),
    [
        (b"not json", 47001),
        (b"[]", 47001),
        (
            b'{"grant_type": "client_credential", "appid": "wx_test_app", "secret": "test_secret", '
            b'"force_refresh": "yes"}',
            47001,
        ),
        (b'{"grant_type": "x", "appid": "wx_test_app", "secret": "test_secret"}', 40002),
        (b'{"grant_type": "client_credential", "appid": "wx_nobody", "secret": "s"}', 40013),
        (b'{"grant_type": "client_credential", "appid": "wx_test_app", "secret": "bad"}', 40125),
    ],
)
async def test_stable_token_errors(sim: Sim, raw: bytes, errcode: int) -> None:
    body = await sim.post(STABLE_PATH, raw=raw)
    assert body["errcode"] == errcode
    assert " rid: " in body["errmsg"]


async def test_expire_tokens_makes_every_token_of_the_app_answer_42001(sim: Sim) -> None:
    plain = await sim.token()
    stable = (await sim.stable_token())["access_token"]
    other = await sim.token(OTHER_APPID, "other_secret")
    assert await sim.post("/sim/tokens/expire", {"appid": APPID}) == {"status": "ok", "expired": 2}
    assert await _send_errcode(sim, plain) == 42001
    assert await _send_errcode(sim, stable) == 42001
    assert await _send_errcode(sim, other) == 0
    fresh = (await sim.stable_token())["access_token"]
    assert fresh != stable
    assert await _send_errcode(sim, fresh) == 0


async def test_templates_list_needs_a_valid_token(sim: Sim) -> None:
    status, missing = await sim.get("/cgi-bin/template/get_all_private_template")
    assert (status, missing["errcode"]) == (200, 41001)
    _, unknown = await sim.get("/cgi-bin/template/get_all_private_template", access_token="nope")  # noqa: S106 - a fake token
    assert unknown["errcode"] == 40001
    token = await sim.token()
    _, listed = await sim.get("/cgi-bin/template/get_all_private_template", access_token=token)
    assert len(listed["template_list"]) == 6
    assert set(listed["template_list"][0]) == {
        "template_id",
        "title",
        "primary_industry",
        "deputy_industry",
        "content",
        "example",
    }
