"""/user/new, /user/info, /user/update, /user/delete, /user/list."""

from __future__ import annotations

import time
from typing import Any

import pytest

from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.models import Key, SpendLog, Team, User
from tests.conftest import MASTER
from tests.support.admin_api import post_ok
from tests.support.assertions import assert_error


def new_user(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/user/new", body)


# --- /user/new ---------------------------------------------------------------


def test_new_user_answers_the_seed_fields_and_a_first_key(client):
    answer = new_user(client, models=["azure-models"], max_budget=0, user_id="krrish3@berri.ai")
    assert answer["key"].startswith("sk-")
    assert answer["expires"] is None
    assert answer["user_id"] == "krrish3@berri.ai"
    assert answer["max_budget"] == 0.0 and isinstance(answer["max_budget"], float)
    assert answer["models"] == ["azure-models"]
    assert answer["token"] == hash_key(answer["key"])
    user = User.get_by_id("krrish3@berri.ai")
    assert (user.max_budget, user.models) == (0.0, ["azure-models"])
    key = Key.get_by_id(answer["token"])
    assert key.user_id == "krrish3@berri.ai"
    # The user's budget and models govern all its keys; the key adds none.
    assert (key.max_budget, key.models) == (None, [])


def test_new_user_key_authenticates(client):
    answer = new_user(client, user_id="u1")
    resp = client.get("/key/info", headers={"Authorization": f"Bearer {answer['key']}"})
    assert resp.get_json()["info"]["user_id"] == "u1"


def test_new_user_without_user_id_gets_a_generated_one(client):
    answer = new_user(client, models=["beta-models"], max_budget=0)
    assert len(answer["user_id"]) == 36
    assert User.get_by_id(answer["user_id"]).models == ["beta-models"]


def test_new_user_with_limits(client):
    body = {
        "user_id": "krrish@berri.ai",
        "max_parallel_requests": 10,
        "tpm_limit": 20,
        "rpm_limit": 4,
    }
    answer = new_user(client, **body)
    user = User.get_by_id("krrish@berri.ai")
    assert (user.max_parallel_requests, user.tpm_limit, user.rpm_limit) == (10, 20, 4)
    assert (answer["max_parallel_requests"], answer["tpm_limit"], answer["rpm_limit"]) == (
        10,
        20,
        4,
    )


def test_new_user_budget_duration_and_team(client):
    answer = new_user(client, team_id="core-infra", max_budget=10, budget_duration="10s")
    user = User.get_by_id(answer["user_id"])
    assert user.team_id == "core-infra"
    assert user.budget_reset_at == pytest.approx(user.created_at + 10)
    assert Team.get_or_none(Team.team_id == "core-infra") is not None


def test_new_user_duration_sets_the_first_keys_expiry(client):
    answer = new_user(client, duration="1h", key_alias="first")
    key = Key.get_by_id(answer["token"])
    assert key.expires == pytest.approx(time.time() + 3600, abs=5)
    assert key.key_alias == "first"
    assert answer["expires"].endswith("Z")


def test_new_user_raises_key_created(make_app):
    events: list[str] = []

    class Probe:
        @hookimpl
        def on_alert(self, alert):
            events.append(f"{alert.event}:{alert.user_id}")

    client = make_app(plugins=[("probe", Probe())]).test_client()
    new_user(client, user_id="u1")
    assert events == ["key_created:u1"]


def test_duplicate_user_is_409_naming_it_and_makes_no_key(client):
    new_user(client, user_id="dup@example.com")
    resp = client.post("/user/new", json={"user_id": "dup@example.com"}, headers=MASTER)
    error = assert_error(resp, 409, param="user_id")
    assert "dup@example.com" in error["message"]
    assert Key.select().count() == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_budget", "x"), ("max_budget", -1), ("models", "azure-models"), ("tpm_limit", "20.5"),
     ("budget_duration", "10"), ("user_email", 3), ("metadata", []), ("duration", "1y")],
)  # fmt: skip
def test_new_user_rejects_wrong_values(client, field, value):
    resp = client.post("/user/new", json={"user_id": "u", field: value}, headers=MASTER)
    assert_error(resp, 400, param=field)
    assert User.select().count() == 0 and Key.select().count() == 0


# --- /user/info --------------------------------------------------------------


def test_user_info_lists_the_users_keys(client):
    answer = new_user(client, user_id="u1", max_budget=5)
    client.post("/key/generate", json={"user_id": "u1"}, headers=MASTER)
    client.post("/key/generate", json={"user_id": "someone-else"}, headers=MASTER)
    body = client.get("/user/info?user_id=u1", headers=MASTER).get_json()
    assert body["user_id"] == "u1"
    assert body["user_info"]["max_budget"] == 5.0
    assert len(body["keys"]) == 2
    assert body["keys"][0]["token"] == answer["token"]
    assert all(key["user_id"] == "u1" for key in body["keys"])
    assert answer["key"] not in str(body)


def test_user_info_lists_the_users_team_and_its_keys_teams_with_their_spend(client):
    new_user(client, user_id="u1", team_id="platform")
    key = client.post(
        "/key/generate", json={"user_id": "u1", "team_id": "research"}, headers=MASTER
    ).get_json()["key"]
    client.post("/key/generate", json={"user_id": "other", "team_id": "sales"}, headers=MASTER)
    chat = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    assert (
        client.post(
            "/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}
        ).status_code
        == 200
    )
    body = client.get("/user/info?user_id=u1", headers=MASTER).get_json()
    teams = {team["team_id"]: team for team in body["teams"]}
    assert set(teams) == {"platform", "research"}
    assert teams["research"]["spend"] > 0 and teams["platform"]["spend"] == 0
    assert {"team_id", "team_alias", "spend", "max_budget", "members"} <= set(teams["research"])


def test_user_info_without_teams_has_an_empty_list(client):
    new_user(client, user_id="loner")
    assert client.get("/user/info?user_id=loner", headers=MASTER).get_json()["teams"] == []


def test_user_info_unknown_user_is_404(client):
    assert_error(client.get("/user/info?user_id=ghost", headers=MASTER), 404, param="user_id")


def test_user_info_without_user_id_is_400(client):
    assert_error(client.get("/user/info", headers=MASTER), 400, param="user_id")


def test_user_info_applies_a_due_reset(client):
    new_user(client, user_id="u1", max_budget=1, budget_duration="30s")
    User.update(spend=0.5, budget_reset_at=time.time() - 1).where(User.user_id == "u1").execute()
    info = client.get("/user/info?user_id=u1", headers=MASTER).get_json()["user_info"]
    assert info["spend"] == 0.0
    assert User.get_by_id("u1").budget_reset_at > time.time()


# --- /user/update ------------------------------------------------------------


def test_user_update_changes_given_fields(client):
    new_user(client, user_id="u1", max_budget=1, rpm_limit=3)
    body = {"user_id": "u1", "max_budget": "2.5", "user_email": "u1@example.com", "models": ["x"]}
    resp = client.post("/user/update", json=body, headers=MASTER)
    assert resp.status_code == 200
    assert resp.get_json()["max_budget"] == 2.5
    user = User.get_by_id("u1")
    assert (user.max_budget, user.user_email, user.models, user.rpm_limit) == (
        2.5, "u1@example.com", ["x"], 3,
    )  # fmt: skip


def test_user_update_null_budget_means_unlimited(client):
    new_user(client, user_id="u1", max_budget=1)
    client.post("/user/update", json={"user_id": "u1", "max_budget": None}, headers=MASTER)
    assert User.get_by_id("u1").max_budget is None


def test_user_update_budget_duration_schedules_from_creation(client):
    new_user(client, user_id="u1")
    client.post("/user/update", json={"user_id": "u1", "budget_duration": "1d"}, headers=MASTER)
    user = User.get_by_id("u1")
    assert user.budget_reset_at == pytest.approx(user.created_at + 86400)


def test_user_update_unknown_user_is_404(client):
    resp = client.post("/user/update", json={"user_id": "ghost", "max_budget": 1}, headers=MASTER)
    assert_error(resp, 404, param="user_id")


def test_user_update_rejects_wrong_values(client):
    new_user(client, user_id="u1", max_budget=1)
    resp = client.post("/user/update", json={"user_id": "u1", "rpm_limit": -4}, headers=MASTER)
    assert_error(resp, 400, param="rpm_limit")


# --- /user/delete ------------------------------------------------------------


def test_user_delete_removes_users_and_their_keys_but_keeps_spend_logs(client):
    first = new_user(client, user_id="u1")
    new_user(client, user_id="u2")
    kept = new_user(client, user_id="u3")
    SpendLog.insert(
        request_id="r1", call_type="chat", api_key=first["token"], user_id="u1",
        model="m", model_group="m", start_time=1.0, end_time=2.0,
    ).execute()  # fmt: skip
    resp = client.post("/user/delete", json={"user_ids": ["u1", "u2"]}, headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["deleted_users"] == ["u1", "u2"]
    assert first["token"] in body["deleted_keys"]
    assert [u.user_id for u in User.select()] == ["u3"]
    assert [k.token for k in Key.select()] == [kept["token"]]
    assert SpendLog.select().count() == 1


def test_user_delete_with_an_unknown_id_deletes_nothing(client):
    new_user(client, user_id="u1")
    resp = client.post("/user/delete", json={"user_ids": ["u1", "ghost"]}, headers=MASTER)
    error = assert_error(resp, 404, param="user_ids")
    assert "ghost" in error["message"]
    assert User.select().count() == 1 and Key.select().count() == 1


# --- /user/list --------------------------------------------------------------


def test_user_list_pages_and_filters(client):
    for i in range(3):
        new_user(client, user_id=f"u{i}", team_id="t" if i else None)
    body = client.get("/user/list?page_size=2&page=1", headers=MASTER).get_json()
    assert [u["user_id"] for u in body["users"]] == ["u0", "u1"]
    assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (3, 1, 2, 2)
    body = client.get("/user/list?team_id=t", headers=MASTER).get_json()
    assert [u["user_id"] for u in body["users"]] == ["u1", "u2"]


def test_user_list_rejects_bad_paging(client):
    assert_error(client.get("/user/list?page_size=-1", headers=MASTER), 400, param="page_size")


# --- blocking ----------------------------------------------------------------


def _chat(client: Any, plain: str) -> Any:
    body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    return client.post("/chat/completions", json=body, headers={"Authorization": f"Bearer {plain}"})


def test_a_blocked_user_cannot_call_with_any_of_its_keys_until_unblocked(client):
    first = new_user(client, user_id="u1")["key"]
    second = post_ok(client, "/key/generate", {"user_id": "u1"})["key"]
    other = post_ok(client, "/key/generate", {"user_id": "u2"})["key"]
    assert post_ok(client, "/user/update", {"user_id": "u1", "blocked": True})["blocked"] is True
    for plain in (first, second):
        error = assert_error(_chat(client, plain), 401, err_type="auth_error")
        assert error["message"] == (
            "Authentication Error, User=u1 is blocked. "
            "Update via `/user/update` if you're an admin."
        )
    assert _chat(client, other).status_code == 200  # another user's key is unaffected
    assert SpendLog.select().count() == 1
    info = client.get("/user/info?user_id=u1", headers=MASTER).get_json()
    assert info["user_info"]["blocked"] is True
    post_ok(client, "/user/update", {"user_id": "u1", "blocked": False})
    assert _chat(client, first).status_code == 200


def test_a_user_can_be_made_blocked(client):
    plain = new_user(client, user_id="u1", blocked=True)["key"]
    assert_error(_chat(client, plain), 401)
    assert User.get_by_id("u1").blocked is True


def test_blocked_must_be_a_boolean(client):
    new_user(client, user_id="u1")
    resp = client.post("/user/update", json={"user_id": "u1", "blocked": "yes"}, headers=MASTER)
    assert_error(resp, 400, param="blocked")
    assert User.get_by_id("u1").blocked is False
