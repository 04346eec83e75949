"""Teams: the ``/team/*`` admin routes, and the ``team_budget`` plugin as a client sees it.

Teams are made through the admin API (as an operator would); spend is earned
by real calls to the built-in mock provider (tests/support/budgets.py) or
set on the row to put a team exactly at its limit.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.call.alerts import Alert
from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog, Team, User
from tests.conftest import MASTER
from tests.support.admin_api import post, post_ok
from tests.support.assertions import assert_error
from tests.support.budgets import CALL_COST, budget_config, chat, error_of

TEAM_FIELDS = {
    "team_id", "team_alias", "admins", "members", "members_with_roles", "metadata", "models",
    "max_budget", "spend", "budget_duration", "budget_reset_at", "max_parallel_requests",
    "tpm_limit", "rpm_limit", "blocked", "created_at", "updated_at",
}  # fmt: skip


@pytest.fixture
def app(make_app, db_url):
    return make_app(budget_config(db_url))


def new_team(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/team/new", body)


def team_key(client: Any, team_id: str, **body: Any) -> str:
    return str(post_ok(client, "/key/generate", {"team_id": team_id, **body})["key"])


def set_team_spend(team_id: str, spend: float) -> None:
    with database.connection_context():
        Team.update(spend=spend).where(Team.team_id == team_id).execute()


# --- the admin routes ----------------------------------------------------------


def test_team_new_answers_litellms_team_row(client):
    team = new_team(
        client,
        team_id="core-infra",
        team_alias="Core",
        max_budget=10,
        budget_duration="30d",
        rpm_limit=5,
        tpm_limit=1000,
        max_parallel_requests=2,
        models=["priced"],
        metadata={"cost_center": "42"},
        members_with_roles=[{"role": "admin", "user_id": "ann"}, {"user_email": "bo@x.io"}],
    )
    assert set(team) == TEAM_FIELDS
    assert (team["team_id"], team["team_alias"], team["max_budget"]) == ("core-infra", "Core", 10.0)
    assert team["admins"] == ["ann"] and len(team["members"]) == 1
    assert team["members_with_roles"][1]["user_email"] == "bo@x.io"
    assert team["budget_reset_at"] is not None and team["spend"] == 0.0
    with database.connection_context():
        assert User.get_by_id("ann").team_id == "core-infra"
        assert User.get(User.user_email == "bo@x.io").team_id == "core-infra"


def test_team_new_generates_an_id_and_refuses_a_duplicate(client):
    made = new_team(client)
    assert len(made["team_id"]) == 36
    assert_error(post(client, "/team/new", {"team_id": made["team_id"]}), 409, param="team_id")


def test_team_new_takes_over_a_team_a_key_named_keeping_its_spend(client):
    team_key(client, "implicit")
    set_team_spend("implicit", 0.5)
    team = new_team(client, team_id="implicit", max_budget=1)
    assert team["spend"] == 0.5 and team["max_budget"] == 1.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_budget": "lots"}, "max_budget"),
        ({"rpm_limit": "four"}, "rpm_limit"),
        ({"budget_duration": "fortnight"}, "budget_duration"),
        ({"members_with_roles": [{"role": "owner", "user_id": "x"}]}, "members_with_roles"),
        ({"members_with_roles": [{"role": "user"}]}, "members_with_roles"),
    ],
)
def test_team_new_names_the_wrong_field(client, body, param):
    assert_error(post(client, "/team/new", body), 400, param=param)
    with database.connection_context():
        assert Team.select().count() == 0


def test_team_info_update_list_and_delete(client):
    new_team(client, team_id="t1", max_budget=1)
    key = team_key(client, "t1")
    info = client.get("/team/info?team_id=t1", headers=MASTER).get_json()
    assert info["team_info"]["team_id"] == "t1"
    assert [k["token"] for k in info["keys"]] == [hash_key(key)]
    updated = post_ok(client, "/team/update", {"team_id": "t1", "max_budget": None, "rpm_limit": 3})
    assert updated["team_id"] == "t1"
    assert updated["data"]["max_budget"] is None and updated["data"]["rpm_limit"] == 3
    new_team(client, team_id="t2", members_with_roles=[{"user_id": "carol"}])
    listed = client.get("/team/list", headers=MASTER).get_json()
    assert [t["team_id"] for t in listed] == ["t1", "t2"]
    mine = client.get("/team/list?user_id=carol", headers=MASTER).get_json()
    assert [t["team_id"] for t in mine] == ["t2"]
    deleted = post_ok(client, "/team/delete", {"team_ids": ["t1"]})
    assert deleted == {"deleted_teams": ["t1"], "deleted_keys": [hash_key(key)]}
    assert_error(client.get("/team/info?team_id=t1", headers=MASTER), 404, param="team_id")


def test_team_delete_with_an_unknown_id_deletes_nothing(client):
    new_team(client, team_id="stays")
    assert_error(post(client, "/team/delete", {"team_ids": ["stays", "nope"]}), 404)
    with database.connection_context():
        assert Team.get_or_none(Team.team_id == "stays") is not None


def test_member_add_and_delete(client):
    new_team(client, team_id="t")
    added = post_ok(client, "/team/member_add", {"team_id": "t", "member": {"user_id": "dan"}})
    assert added["members"] == ["dan"] and [u["user_id"] for u in added["updated_users"]] == ["dan"]
    many = [{"user_id": "eve", "role": "admin"}, {"user_id": "fay"}]
    added = post_ok(client, "/team/member_add", {"team_id": "t", "member": many})
    assert added["admins"] == ["eve"] and added["members"] == ["dan", "fay"]
    again = post(client, "/team/member_add", {"team_id": "t", "member": {"user_id": "dan"}})
    assert_error(again, 400, param="member")
    left = post_ok(client, "/team/member_delete", {"team_id": "t", "user_id": "dan"})
    assert left["members"] == ["fay"]
    with database.connection_context():
        assert User.get_by_id("dan").team_id is None and User.get_by_id("fay").team_id == "t"
    gone = post(client, "/team/member_delete", {"team_id": "t", "user_id": "dan"})
    assert_error(gone, 404, param="user_id")
    assert_error(
        post(client, "/team/member_add", {"team_id": "zz", "member": {"user_id": "a"}}), 404
    )


def test_a_virtual_key_may_not_manage_teams(client):
    key = team_key(client, "t")
    resp = client.post("/team/new", json={}, headers={"Authorization": f"Bearer {key}"})
    assert_error(resp, 403)
    assert_error(client.get("/team/list"), 401)


# --- enforcement ---------------------------------------------------------------

TEAM_MESSAGE = (
    "Authentication Error, ExceededTokenBudget: Current Team Spend: {spend}; "
    "Max Budget for Team: {max_budget}"
)


def test_team_at_its_budget_refuses_its_keys_with_litellms_message(app, client):
    new_team(client, team_id="capped", max_budget=0.5)
    key = team_key(client, "capped")
    set_team_spend("capped", 0.5)
    assert error_of(chat(app, key)) == TEAM_MESSAGE.format(spend=0.5, max_budget=0.5)
    with database.connection_context():
        assert SpendLog.select().count() == 0


def test_team_budget_covers_every_key_and_counts_their_calls(app, client):
    new_team(client, team_id="shared", max_budget=2.5 * CALL_COST)
    first, second = team_key(client, "shared"), team_key(client, "shared")
    statuses = [chat(app, key).status_code for key in (first, second, first, second)]
    assert statuses == [200, 200, 200, 401]
    info = client.get("/team/info?team_id=shared", headers=MASTER).get_json()["team_info"]
    assert info["spend"] == pytest.approx(3 * CALL_COST, abs=1e-12)


def test_a_members_key_without_a_team_is_covered_by_the_users_team(app, client):
    new_team(client, team_id="via-user", max_budget=0, members_with_roles=[{"user_id": "gus"}])
    key = str(post_ok(client, "/key/generate", {"user_id": "gus"})["key"])
    assert "Max Budget for Team: 0.0" in error_of(chat(app, key))


def test_team_budget_resets_with_its_duration(app, client):
    new_team(client, team_id="monthly", max_budget=1, budget_duration="30d")
    key = team_key(client, "monthly")
    with database.connection_context():
        Team.update(spend=1.0, budget_reset_at=1.0).where(Team.team_id == "monthly").execute()
    assert chat(app, key).status_code == 200
    with database.connection_context():
        team = Team.get_by_id("monthly")
        assert team.spend == pytest.approx(CALL_COST) and team.budget_reset_at > 1.0


def test_blocked_team_refuses_its_keys_until_unblocked(app, client):
    new_team(client, team_id="paused")
    key = team_key(client, "paused")
    assert post_ok(client, "/team/block", {"team_id": "paused"})["blocked"] is True
    assert error_of(chat(app, key)) == (
        "Authentication Error, Team=paused is blocked. "
        "Update via `/team/unblock` if you're an admin."
    )
    post_ok(client, "/team/unblock", {"team_id": "paused"})
    assert chat(app, key).status_code == 200


def test_team_models_limit_its_keys(app, client):
    new_team(client, team_id="narrow", models=["other-model"])
    key = team_key(client, "narrow")
    message = error_of(chat(app, key))
    assert message.startswith("Authentication Error, team not allowed to access model.")


def test_team_rpm_limit_is_shared_by_its_keys(app, client):
    new_team(client, team_id="slow", rpm_limit=2)
    first, second = team_key(client, "slow"), team_key(client, "slow")
    assert [chat(app, k).status_code for k in (first, second)] == [200, 200]
    refused = chat(app, first)
    assert refused.status_code == 429
    assert refused.get_json()["error"]["message"] == (
        "Rate limit exceeded for team slow: rpm_limit=2, current=2"
    )


def test_strict_mode_reserves_against_the_team(make_app, db_url, client):
    app = make_app(budget_config(db_url, general_settings={"budget_enforcement": "strict"}))
    client = app.test_client()
    new_team(client, team_id="strict-team", max_budget=CALL_COST / 10)
    key = team_key(client, "strict-team")
    message = error_of(chat(app, key, max_tokens=5))
    assert message.startswith("Authentication Error, ExceededTokenBudget: Current Team Spend: 0.0;")
    assert "(strict budget: this call may cost up to" in message


def test_disabling_team_budget_turns_off_only_the_team_check(make_app, db_url):
    app = make_app(budget_config(db_url, plugins={"disable": ["team_budget"]}))
    client = app.test_client()
    new_team(client, team_id="ignored", max_budget=0)
    assert chat(app, team_key(client, "ignored")).status_code == 200
    assert error_of(chat(app, team_key(client, "ignored", max_budget=0))).startswith(
        "Authentication Error, ExceededTokenBudget: Current spend for token"
    )


class AlertCapture:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if alert.event_group == "team":
            self.alerts.append(alert)


def test_team_crossing_its_budget_raises_team_alerts_once(make_app, db_url):
    capture = AlertCapture()
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    client = app.test_client()
    new_team(client, team_id="alerted", max_budget=1.5 * CALL_COST)
    key = team_key(client, "alerted")
    for _ in range(2):
        chat(app, key)
    events = [(a.event, a.team_id) for a in capture.alerts]
    # 85% and 95% crossed once each, and the budget once, all by the second call.
    assert (
        sorted(events) == [("budget_crossed", "alerted")] + [("threshold_crossed", "alerted")] * 2
    )
    assert all(
        a.event_message.startswith("Team") or "Team=" in a.event_message for a in capture.alerts
    )
    with database.connection_context():
        assert Key.get_by_id(hash_key(key)).team_id == "alerted"


@pytest.mark.parametrize("field", ["rpm_limit", "tpm_limit", "max_parallel_requests"])
def test_update_with_null_clears_a_limit_of_a_team_key_and_budget(client, field):
    new_team(client, team_id="t", **{field: 5})
    assert post_ok(client, "/team/update", {"team_id": "t", field: None})["data"][field] is None
    key = post_ok(client, "/key/generate", {field: 5})["key"]
    assert post_ok(client, "/key/update", {"key": key, field: None})[field] is None
    post_ok(client, "/budget/new", {"budget_id": "b", field: 5})
    assert post_ok(client, "/budget/update", {"budget_id": "b", field: None})[field] is None


def test_models_lists_only_what_the_keys_team_allows(app, client):
    new_team(client, team_id="narrow-list", models=["other-model"])
    key = team_key(client, "narrow-list")
    listed = client.get("/models", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert listed["data"] == []
    post_ok(client, "/team/update", {"team_id": "narrow-list", "models": ["priced"]})
    listed = client.get("/models", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert [m["id"] for m in listed["data"]] == ["priced"]
