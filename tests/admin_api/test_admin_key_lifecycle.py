"""/key/block, /key/unblock and /key/regenerate, seen through real LLM calls."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import Key, SpendLog
from tests.conftest import MASTER_KEY
from tests.support.admin_api import post, post_ok
from tests.support.assertions import assert_error
from tests.support.budgets import CALL_COST, budget_config, budget_upstream, chat

BLOCKED = "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."


@pytest.fixture
def app(make_app, db_url):
    return make_app(budget_config(db_url))


def generate(client: Any, **body: Any) -> dict[str, Any]:
    return post_ok(client, "/key/generate", body)


def test_blocked_key_gets_401_with_the_unblock_hint_and_is_not_charged(app, client):
    plain = generate(client, key_alias="ci")["key"]
    answer = post_ok(client, "/key/block", {"key": plain})
    assert answer["blocked"] is True and answer["key"] == hash_key(plain)
    assert plain not in str(answer.values())
    resp = chat(app, plain)
    assert assert_error(resp, 401, err_type="auth_error")["message"] == BLOCKED
    with database.connection_context():
        assert SpendLog.select().count() == 0


def test_unblocked_key_calls_again(app, client):
    plain = generate(client)["key"]
    post_ok(client, "/key/block", {"key": hash_key(plain)})
    answer = post_ok(client, "/key/unblock", {"key": plain})
    assert answer["blocked"] is False
    assert chat(app, plain).status_code == 200


@pytest.mark.parametrize("route", ["/key/block", "/key/unblock", "/key/regenerate"])
def test_unknown_key_is_404_naming_no_secret(client, route):
    error = assert_error(post(client, route, {"key": "sk-nothere1234"}), 404, param="key")
    assert "sk-nothere1234" not in error["message"]


@pytest.mark.parametrize("route", ["/key/block", "/key/unblock", "/key/regenerate"])
def test_key_is_required(client, route):
    assert_error(post(client, route, {}), 400, param="key")


def test_a_virtual_key_cannot_block_or_regenerate(client):
    plain = generate(client)["key"]
    for route in ("/key/block", "/key/regenerate"):
        resp = client.post(route, json={"key": plain}, headers={"Authorization": f"Bearer {plain}"})
        assert_error(resp, 403)


def test_regenerate_keeps_settings_and_spend_and_stops_the_old_secret(app, client):
    old = generate(
        client,
        key_alias="billing",
        user_id="u1",
        team_id="t1",
        models=["priced"],
        max_budget=10,
        soft_budget=5,
        rpm_limit=100,
        tpm_limit=10000,
        max_parallel_requests=3,
        budget_duration="30d",
        metadata={"env": "prod"},
    )
    assert chat(app, old["key"]).status_code == 200
    new = post_ok(client, "/key/regenerate", {"key": old["key"]})
    assert new["key"] != old["key"] and new["key"].startswith("sk-")
    assert new["token"] == hash_key(new["key"]) != old["token"]
    assert new["key_name"] == f"sk-...{new['key'][-4:]}"
    kept = ("key_alias", "user_id", "team_id", "models", "max_budget", "soft_budget")
    kept += ("rpm_limit", "tpm_limit", "max_parallel_requests", "budget_duration", "metadata")
    kept += ("budget_reset_at", "created_at", "expires", "blocked")
    assert {f: new[f] for f in kept} == {f: old[f] for f in kept}
    assert new["spend"] == pytest.approx(CALL_COST)
    assert_error(chat(app, old["key"]), 401, err_type="auth_error")
    assert chat(app, new["key"]).status_code == 200
    with database.connection_context():
        assert Key.get_or_none(Key.token == old["token"]) is None
        logs = list(SpendLog.select())
        # The key's logs follow it, so its spend is still the sum of its logs.
        assert {log.api_key for log in logs} == {new["token"]}
        key = Key.get_by_id(new["token"])
        assert key.spend == pytest.approx(sum(log.spend for log in logs), abs=1e-12)


def test_regenerate_by_path_and_with_a_chosen_new_key(app, client):
    old = generate(client)
    resp = client.post(
        f"/key/{old['key']}/regenerate",
        json={"new_key": "sk-my-rotated-key"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["key"] == "sk-my-rotated-key"
    assert chat(app, "sk-my-rotated-key").status_code == 200


def test_regenerate_to_an_existing_key_or_the_master_key_changes_nothing(client):
    first, second = generate(client), generate(client)
    resp = post(client, "/key/regenerate", {"key": first["key"], "new_key": second["key"]})
    assert_error(resp, 409, param="new_key")
    resp = post(client, "/key/regenerate", {"key": first["key"], "new_key": MASTER_KEY})
    assert_error(resp, 400, param="new_key")
    with database.connection_context():
        assert Key.get_or_none(Key.token == first["token"]) is not None


def test_a_blocked_key_stays_blocked_after_regenerate(app, client):
    old = generate(client)
    post_ok(client, "/key/block", {"key": old["key"]})
    new = post_ok(client, "/key/regenerate", {"key": old["key"]})
    assert new["blocked"] is True
    assert assert_error(chat(app, new["key"]), 401)["message"] == BLOCKED


def test_a_call_in_flight_when_its_key_is_regenerated_is_added_to_the_key(app, client):
    """The call settles under the hash it started with, which the key no longer has:
    its cost still lands on the key, and its log follows the key."""
    old = generate(client, key_alias="busy", max_budget=10)
    upstream = budget_upstream()
    upstream.delay = 1.5
    answers: list[Any] = []
    call = threading.Thread(target=lambda: answers.append(chat(app, old["key"])))
    call.start()
    try:
        upstream.wait_in_flight(1, timeout=10)
        new = post_ok(client, "/key/regenerate", {"key": old["key"]})
    finally:
        call.join(timeout=30)
        upstream.delay = 0
    assert answers and answers[0].status_code == 200
    with database.connection_context():
        logs = list(SpendLog.select())
        assert len(logs) == 1 and {log.api_key for log in logs} == {new["token"]}
        key = Key.get_by_id(new["token"])
        assert key.spend == pytest.approx(logs[0].spend) and key.spend > 0
