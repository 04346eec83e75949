"""/key/generate, /key/info, /key/update, /key/delete, /key/list."""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key, Team, User
from tests.conftest import MASTER
from tests.support.admin_api import post_ok
from tests.support.assertions import assert_error

ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
GENERATE_FIELDS = {
    "key", "key_name", "token", "expires", "user_id", "team_id", "key_alias", "models",
    "max_budget", "soft_budget", "spend", "budget_duration", "budget_reset_at",
    "max_parallel_requests", "tpm_limit", "rpm_limit", "metadata", "created_at",
}  # fmt: skip


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def generate(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/key/generate", body)


def bearer(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


# --- /key/generate -----------------------------------------------------------


def test_generate_answers_every_documented_field(client):
    answer = generate(
        client,
        models=["gpt-3.5-turbo"],
        user_id="u1",
        team_id="core-infra",
        key_alias="ci",
        max_budget=10,
        soft_budget=8,
        max_parallel_requests=10,
        tpm_limit=20,
        rpm_limit=4,
        metadata={"env": "prod"},
    )
    assert GENERATE_FIELDS <= set(answer)
    assert answer["key"].startswith("sk-")
    assert answer["token"] == hash_key(answer["key"])
    assert answer["key_name"] == f"sk-...{answer['key'][-4:]}"
    assert answer["models"] == ["gpt-3.5-turbo"]
    assert (answer["user_id"], answer["team_id"], answer["key_alias"]) == ("u1", "core-infra", "ci")
    assert answer["max_budget"] == 10.0 and isinstance(answer["max_budget"], float)
    assert answer["soft_budget"] == 8.0
    assert answer["spend"] == 0.0
    assert (answer["max_parallel_requests"], answer["tpm_limit"], answer["rpm_limit"]) == (
        10,
        20,
        4,
    )
    assert answer["metadata"] == {"env": "prod"}
    assert answer["expires"] is None and answer["budget_reset_at"] is None
    assert ISO_Z.match(answer["created_at"])


def test_generate_stores_only_the_hash_of_the_key(client):
    answer = generate(client)
    row = Key.get_by_id(answer["token"])
    stored = [str(value) for value in row.__data__.values()]
    assert not any(answer["key"] in value for value in stored)
    assert row.key_name == answer["key_name"]


def test_generate_without_user_id_makes_a_uuid_user_with_a_row(client):
    answer = generate(client, max_parallel_requests=10, tpm_limit=20, rpm_limit=4)
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", answer["user_id"]
    )
    assert User.get_or_none(User.user_id == answer["user_id"]) is not None


def test_generate_for_an_unknown_user_creates_the_user_row(client):
    generate(client, user_id="new-user@example.com")
    user = User.get_by_id("new-user@example.com")
    assert user.spend == 0.0 and user.max_budget is None


def test_generate_for_an_existing_user_leaves_the_user_unchanged(client):
    client.post("/user/new", json={"user_id": "krrish3@berri.ai", "max_budget": 3}, headers=MASTER)
    answer = generate(client, models=["azure-models"], user_id="krrish3@berri.ai")
    assert answer["user_id"] == "krrish3@berri.ai"
    assert User.get_by_id("krrish3@berri.ai").max_budget == 3.0


def test_generate_with_team_id_creates_the_team_row(client):
    generate(client, team_id="core-infra")
    generate(client, team_id="core-infra")
    assert Team.select().where(Team.team_id == "core-infra").count() == 1


def test_generate_max_budget_as_numeric_string(client):
    assert generate(client, max_budget="4.5")["max_budget"] == 4.5
    assert generate(client, max_budget="0")["max_budget"] == 0.0


def test_generate_budget_duration_sets_reset_one_period_after_creation(client):
    answer = generate(client, max_budget=10, budget_duration="10s")
    assert answer["budget_duration"] == "10s"
    assert epoch(answer["budget_reset_at"]) == pytest.approx(epoch(answer["created_at"]) + 10)
    row = Key.get_by_id(answer["token"])
    assert row.budget_reset_at == pytest.approx(row.created_at + 10)


def test_generate_duration_sets_expires(client):
    answer = generate(client, duration="1h")
    assert ISO_Z.match(answer["expires"])
    assert epoch(answer["expires"]) == pytest.approx(epoch(answer["created_at"]) + 3600)


def test_generate_explicit_expires(client):
    answer = generate(client, expires="2999-01-01T00:00:00Z")
    assert answer["expires"] == "2999-01-01T00:00:00.000000Z"


def test_generated_key_with_a_past_expiry_is_refused(client):
    resp = client.post("/key/generate", json={"expires": "2001-01-01T00:00:00Z"}, headers=MASTER)
    assert_error(resp, 400, param="expires")


def test_generate_with_duration_and_expires_is_400(client):
    body = {"duration": "1h", "expires": "2999-01-01T00:00:00Z"}
    assert_error(client.post("/key/generate", json=body, headers=MASTER), 400, param="expires")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_budget", "abc"), ("max_budget", [1]), ("max_budget", True), ("max_budget", -1),
        ("max_budget", "-0.5"), ("max_budget", "nan"), ("max_budget", {}),
        ("soft_budget", "x"), ("rpm_limit", "4.5"), ("rpm_limit", 4.5), ("rpm_limit", -1),
        ("tpm_limit", True), ("max_parallel_requests", -2), ("budget_duration", "10x"),
        ("budget_duration", 10), ("budget_duration", "0s"), ("duration", "forever"),
        ("models", "gpt-4o"), ("models", [1]), ("metadata", "x"), ("metadata", [1]),
        ("key_alias", 5), ("user_id", ""), ("user_id", 7), ("team_id", "t" * 256),
        ("expires", "tomorrow"),
    ],
)  # fmt: skip
def test_generate_rejects_wrong_values_naming_the_field(client, field, value):
    resp = client.post("/key/generate", json={field: value}, headers=MASTER)
    error = assert_error(resp, 400, param=field)
    assert field in error["message"]
    assert Key.select().count() == 0


def test_generate_raises_a_key_created_alert_inside_the_transaction(make_app):
    seen: list[tuple[Any, bool]] = []

    class Probe:
        @hookimpl
        def on_alert(self, alert):
            # Runs in the insert's transaction: the row is visible, not yet committed.
            seen.append((alert, Key.get_or_none(Key.token == alert.token) is not None))
            assert database.in_transaction()

    client = make_app(plugins=[("probe", Probe())]).test_client()
    answer = generate(client, user_id="u1", team_id="t1", key_alias="ci", max_budget=5)
    assert len(seen) == 1
    alert, row_visible = seen[0]
    assert row_visible
    assert (alert.event, alert.event_group) == ("key_created", "key")
    assert (alert.token, alert.user_id, alert.team_id) == (answer["token"], "u1", "t1")
    assert (alert.key_alias, alert.max_budget) == ("ci", 5.0)
    assert answer["key"] not in str(alert.payload())


# --- /key/info ---------------------------------------------------------------


@pytest.mark.parametrize("by", ["plain", "token"])
def test_key_info_by_plain_key_or_token(client, by):
    answer = generate(client, max_budget=2, key_alias="a")
    value = answer["key"] if by == "plain" else answer["token"]
    resp = client.get(f"/key/info?key={value}", headers=MASTER)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["key"] == answer["token"]
    info = body["info"]
    assert info["max_budget"] == 2.0 and info["key_alias"] == "a"
    assert "key" not in info and answer["key"] not in resp.get_data(as_text=True)


def test_key_info_unknown_key_is_404(client):
    error = assert_error(client.get("/key/info?key=sk-nothing", headers=MASTER), 404, param="key")
    assert "sk-nothing" not in error["message"]  # never echo a secret


def test_key_info_without_key_is_400_for_the_master_key(client):
    assert_error(client.get("/key/info", headers=MASTER), 400, param="key")


def test_key_info_applies_a_due_budget_reset(client):
    answer = generate(client, max_budget=1, budget_duration="30s")
    row = Key.get_by_id(answer["token"])
    Key.update(spend=0.7, budget_reset_at=time.time() - 1).where(Key.token == row.token).execute()
    info = client.get(f"/key/info?key={answer['key']}", headers=MASTER).get_json()["info"]
    assert info["spend"] == 0.0
    assert epoch(info["budget_reset_at"]) > time.time()
    assert Key.get_by_id(answer["token"]).spend == 0.0


def test_key_info_reports_spend_as_a_number(client):
    answer = generate(client)
    Key.update(spend=Key.spend + 0.001413).where(Key.token == answer["token"]).execute()
    info = client.get(f"/key/info?key={answer['token']}", headers=MASTER).get_json()["info"]
    assert info["spend"] == pytest.approx(0.001413)


# --- /key/update -------------------------------------------------------------


def update(client: Any, **body: Any) -> Any:
    return client.post("/key/update", json=body, headers=MASTER)


def test_update_changes_the_given_fields_only(client):
    answer = generate(client, max_budget=1, rpm_limit=2, key_alias="old")
    resp = update(client, key=answer["key"], max_budget="3.5", models=["mistral"], tpm_limit=9)
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["key"] == answer["token"]
    assert (body["max_budget"], body["models"], body["tpm_limit"]) == (3.5, ["mistral"], 9)
    row = Key.get_by_id(answer["token"])
    assert (row.rpm_limit, row.key_alias, row.max_budget) == (2, "old", 3.5)


def test_update_with_null_clears_a_limit_and_resets_lists(client):
    answer = generate(client, max_budget=1, models=["mistral"], metadata={"a": 1})
    update(client, key=answer["token"], max_budget=None, models=None, metadata=None)
    row = Key.get_by_id(answer["token"])
    assert (row.max_budget, row.models, row.metadata) == (None, [], {})


def test_update_budget_duration_schedules_from_creation(client):
    answer = generate(client)
    body = update(client, key=answer["token"], budget_duration="1h").get_json()
    row = Key.get_by_id(answer["token"])
    assert row.budget_reset_at == pytest.approx(row.created_at + 3600)
    assert body["budget_reset_at"] is not None
    update(client, key=answer["token"], budget_duration=None)
    assert Key.get_by_id(answer["token"]).budget_reset_at is None


def test_update_duration_sets_a_new_expiry(client):
    answer = generate(client)
    before = time.time()
    update(client, key=answer["token"], duration="30d")
    assert Key.get_by_id(answer["token"]).expires == pytest.approx(before + 30 * 86400, abs=5)


def test_update_to_a_new_user_creates_the_user(client):
    answer = generate(client)
    update(client, key=answer["token"], user_id="moved@example.com")
    assert Key.get_by_id(answer["token"]).user_id == "moved@example.com"
    assert User.get_or_none(User.user_id == "moved@example.com") is not None


def test_blocked_key_can_no_longer_authenticate(client):
    answer = generate(client)
    assert update(client, key=answer["key"], blocked=True).status_code == 200
    resp = client.get("/key/info", headers=bearer(answer["key"]))
    assert_error(resp, 401)


def test_update_unknown_key_is_404(client):
    assert_error(update(client, key="sk-missing", max_budget=1), 404, param="key")


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_budget", "lots"), ("rpm_limit", "four"), ("models", "x"), ("blocked", "yes")],
)
def test_update_rejects_wrong_values(client, field, value):
    answer = generate(client, max_budget=1)
    assert_error(update(client, key=answer["token"], **{field: value}), 400, param=field)
    assert Key.get_by_id(answer["token"]).max_budget == 1.0


# --- /key/delete -------------------------------------------------------------


def test_delete_by_plain_key_and_token(client):
    first, second, kept = generate(client), generate(client), generate(client)
    keys = [first["key"], second["token"]]
    resp = client.post("/key/delete", json={"keys": keys}, headers=MASTER)
    assert resp.status_code == 200
    assert resp.get_json() == {"deleted_keys": keys}
    assert [k.token for k in Key.select()] == [kept["token"]]
    assert_error(client.get("/key/info", headers=bearer(first["key"])), 401)


def test_delete_with_an_unknown_key_deletes_nothing(client):
    answer = generate(client)
    body = {"keys": [answer["key"], "sk-unknown-key"]}
    error = assert_error(client.post("/key/delete", json=body, headers=MASTER), 404, param="keys")
    assert "sk-...-key" in error["message"] and "sk-unknown-key" not in error["message"]
    assert Key.select().count() == 1


@pytest.mark.parametrize("keys", [[], "sk-1", [1], None])
def test_delete_needs_a_list_of_keys(client, keys):
    assert_error(client.post("/key/delete", json={"keys": keys}, headers=MASTER), 400, param="keys")


# --- /key/list ---------------------------------------------------------------


def test_list_returns_token_hashes_with_paging(client):
    tokens = [generate(client, user_id="u1")["token"] for _ in range(3)]
    generate(client, user_id="u2", team_id="t2")
    resp = client.get("/key/list?user_id=u1&size=2&page=2", headers=MASTER)
    assert resp.get_json() == {
        "keys": [tokens[2]],
        "total_count": 3,
        "current_page": 2,
        "total_pages": 2,
    }


def test_list_filters_by_team_and_returns_full_objects(client):
    generate(client, user_id="u1")
    wanted = generate(client, team_id="t2", key_alias="team-key")
    body = client.get("/key/list?team_id=t2&return_full_object=true", headers=MASTER).get_json()
    assert body["total_count"] == 1
    assert body["keys"][0]["token"] == wanted["token"]
    assert body["keys"][0]["key_alias"] == "team-key"


def test_list_of_nothing(client):
    body = client.get("/key/list", headers=MASTER).get_json()
    assert body == {"keys": [], "total_count": 0, "current_page": 1, "total_pages": 0}


@pytest.mark.parametrize(
    ("query", "param"), [("page=0", "page"), ("size=abc", "size"), ("size=0", "size")]
)
def test_list_rejects_bad_paging(client, query, param):
    assert_error(client.get(f"/key/list?{query}", headers=MASTER), 400, param=param)


def test_expiry_is_utc_iso(client):
    answer = generate(client, expires="2999-06-01T12:00:00+02:00")
    assert answer["expires"] == "2999-06-01T10:00:00.000000Z"
    assert (
        Key.get_by_id(answer["token"]).expires
        == datetime(2999, 6, 1, 10, tzinfo=timezone.utc).timestamp()
    )
