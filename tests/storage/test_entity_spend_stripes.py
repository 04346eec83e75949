"""Keys', users', teams' and customers' spend is striped (proxy.storage.stripes): a
settle of a busy key never waits for its rows' locks, and every reader (the call's
checks, strict reservations, the admin routes, list sorting, resets) sees the whole
counter: the row's ``spend`` plus its ``spend_stripe`` rows.

The multi-process proofs are tests/integration/test_spend_ledger.py (counters ==
sum of the spend logs for one hot key on two hosts, also while it is regenerated)
and test_budget_strict_concurrency.py (a hot key's strict budget binds exactly).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg2
import pytest
from peewee import fn

from proxy.call.auth import hash_key
from proxy.storage.db import database
from proxy.storage.models import Customer, Key, SpendLog, SpendStripe, Team, User
from tests.conftest import MASTER, base_config
from tests.support.budgets import CALL_COST, chat, make_key, make_user, priced_model
from tests.support.proxy_server import wait_until

HOT = {"user": "s-user", "team": "s-team", "customer": "s-customer"}


def _config(db_url: str, mode: str = "check") -> dict[str, Any]:
    return base_config(
        db_url, model_list=[priced_model()], general_settings={"budget_enforcement": mode}
    )


def _shown(app: Any, plain: str) -> dict[str, float]:
    """Each counter as the admin routes show it."""
    client = app.test_client()

    def get(path: str) -> Any:
        resp = client.get(path, headers=MASTER)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()

    return {
        "key": get(f"/key/info?key={plain}")["info"]["spend"],
        "user": get(f"/user/info?user_id={HOT['user']}")["user_info"]["spend"],
        "team": get(f"/team/info?team_id={HOT['team']}")["team_info"]["spend"],
        "customer": get(f"/customer/info?end_user_id={HOT['customer']}")["spend"],
    }


def _stripe(kind: str, entity_id: str, stripe: int, spend: float) -> None:
    with database.connection_context():
        SpendStripe.insert(kind=kind, entity_id=entity_id, stripe=stripe, spend=spend).execute()


def _stripe_rows(kind: str | None = None) -> dict[tuple[str, str], float]:
    with database.connection_context():
        S = SpendStripe
        query = S.select(S.kind, S.entity_id, fn.SUM(S.spend).alias("total"))
        if kind is not None:
            query = query.where(S.kind == kind)
        return {(r.kind, r.entity_id): r.total for r in query.group_by(S.kind, S.entity_id)}


def test_every_counter_is_its_row_plus_its_stripes_and_equals_the_logs(db_url, make_app) -> None:
    app = make_app(_config(db_url))
    make_user(HOT["user"], team_id=HOT["team"])
    plain = make_key(user_id=HOT["user"])
    for _ in range(40):
        assert chat(app, plain, user=HOT["customer"]).status_code == 200
    with database.connection_context():
        logged = SpendLog.select(fn.SUM(SpendLog.spend)).scalar()
    assert logged == pytest.approx(40 * CALL_COST, abs=1e-12)
    assert _shown(app, plain) == pytest.approx(dict.fromkeys(_shown(app, plain), logged))
    ids = {"key": hash_key(plain), **HOT}
    with database.connection_context():
        used = {
            kind: SpendStripe.select()
            .where(
                (SpendStripe.kind == kind)
                & (SpendStripe.entity_id == ids[kind])
                & (SpendStripe.spend > 0)
            )
            .count()
            for kind in ids
        }
    if db_url.startswith("sqlite"):
        assert set(used.values()) == {0}  # one writer at a time: nothing to stripe
    else:
        assert min(used.values()) > 1  # 40 random picks of 16 stripes each


def test_every_reader_sums_the_stripes(db_url, make_app) -> None:
    """Stripes written directly (as PostgreSQL's settles do) count everywhere: the
    admin routes, list sorting, the call's budget checks in both modes."""
    make_app(_config(db_url))  # the tables
    make_user(HOT["user"], team_id=HOT["team"], max_budget=10.0)
    plain = make_key(user_id=HOT["user"], spend=1.0, max_budget=2.5)
    make_key(spend=2.0, key_alias="richer-base")
    with database.connection_context():
        Team.create(team_id=HOT["team"], spend=0.25)
        Customer.create(user_id=HOT["customer"], spend=0.5)
    _stripe("key", hash_key(plain), 3, 1.0)
    _stripe("key", hash_key(plain), 7, 0.5)
    _stripe("user", HOT["user"], 0, 2.0)
    _stripe("team", HOT["team"], 15, 0.75)
    _stripe("customer", HOT["customer"], 2, 1.5)
    for mode in ("check", "strict"):
        app = make_app(_config(db_url, mode))
        assert _shown(app, plain) == {"key": 2.5, "user": 2.0, "team": 1.0, "customer": 2.0}
        listed = app.test_client().get(
            "/key/list?return_full_object=true&sort=spend&order=desc", headers=MASTER
        )
        spends = [key["spend"] for key in listed.get_json()["keys"]]
        assert spends == [2.5, 2.0]  # base 1.0 + stripes 1.5 ranks above base 2.0
        resp = chat(app, plain)  # 2.5 of the key's 2.5: spent
        assert resp.status_code == 401, resp.get_json()
        assert "2.5" in resp.get_json()["error"]["message"]


def test_a_due_reset_zeroes_the_row_and_its_stripes(db_url, make_app) -> None:
    app = make_app(_config(db_url))
    plain = make_key(spend=1.0, budget_duration="30d", budget_reset_at=time.time() - 1)
    _stripe("key", hash_key(plain), 4, 2.0)
    body = app.test_client().get(f"/key/info?key={plain}", headers=MASTER).get_json()
    assert body["info"]["spend"] == 0.0
    assert _stripe_rows("key") == {("key", hash_key(plain)): 0.0}
    with database.connection_context():
        assert Key.get_by_id(hash_key(plain)).spend == 0.0
    assert chat(app, plain).status_code == 200
    body = app.test_client().get(f"/key/info?key={plain}", headers=MASTER).get_json()
    assert body["info"]["spend"] == pytest.approx(CALL_COST, abs=1e-12)


def test_deleting_an_entity_deletes_its_stripes(db_url, make_app) -> None:
    """A user, team or customer made again with the same id starts from 0."""
    app = make_app(_config(db_url))
    client = app.test_client()
    make_user(HOT["user"])
    plain = make_key(user_id=HOT["user"])
    lone = make_key()
    with database.connection_context():
        Team.create(team_id=HOT["team"], updated_at=1.0)
        Customer.create(user_id=HOT["customer"])
    for kind, entity_id in (
        ("key", hash_key(plain)),
        ("key", hash_key(lone)),
        *HOT.items(),
    ):
        _stripe(kind, entity_id, 1, 1.0)
    for path, body in (
        ("/user/delete", {"user_ids": [HOT["user"]]}),  # and its key
        ("/team/delete", {"team_ids": [HOT["team"]]}),
        ("/customer/delete", {"user_ids": [HOT["customer"]]}),
        ("/key/delete", {"keys": [lone]}),
    ):
        assert client.post(path, json=body, headers=MASTER).status_code == 200, path
    assert _stripe_rows() == {}
    assert client.post("/customer/new", json={"user_id": HOT["customer"]}, headers=MASTER)
    shown = client.get(f"/customer/info?end_user_id={HOT['customer']}", headers=MASTER)
    assert shown.get_json()["spend"] == 0.0


def test_a_settle_does_not_wait_for_its_rows_locks(db_url, make_app) -> None:
    """What an update of the key, user, team or customer row locks holds up no settle
    of theirs; before striping every settle updated those rows and waited here."""
    if db_url.startswith("sqlite"):
        pytest.skip("row locks are PostgreSQL's")
    app = make_app(_config(db_url))
    make_user(HOT["user"], team_id=HOT["team"])
    plain = make_key(user_id=HOT["user"])
    assert chat(app, plain, user=HOT["customer"]).status_code == 200  # makes team, customer
    holder = psycopg2.connect(db_url)
    caller = None
    try:
        with holder.cursor() as cur:
            for table, pk, entity_id in (
                ('"key"', "token", hash_key(plain)),
                ('"user"', "user_id", HOT["user"]),
                ("team", "team_id", HOT["team"]),
                ("customer", "user_id", HOT["customer"]),
            ):
                # What a concurrent settle's `spend = spend + x` held until its COMMIT.
                cur.execute(f"SELECT 1 FROM {table} WHERE {pk} = %s FOR NO KEY UPDATE", [entity_id])
                assert cur.fetchone() == (1,)
        statuses: list[int] = []
        caller = threading.Thread(
            target=lambda: statuses.append(chat(app, plain, user=HOT["customer"]).status_code)
        )
        caller.start()
        wait_until(lambda: statuses, timeout=30)  # fails while the settle waits
        assert statuses == [200]
    finally:
        holder.rollback()
        holder.close()
        if caller is not None:
            caller.join(timeout=30)
    with database.connection_context():
        user = User.get_by_id(HOT["user"])
        assert user.spend == pytest.approx(2 * CALL_COST, abs=1e-12)
