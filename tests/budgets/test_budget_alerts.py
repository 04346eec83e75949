"""Budget alerts raised by the budget plugins, as ``on_alert`` receives them.

``threshold_crossed`` at 85% and 95% of max_budget, ``budget_crossed`` at
100%, ``soft_budget_crossed`` at a key's (or budget row's) soft budget:
each exactly once per entity per budget period, from the call that crossed.
"""

from __future__ import annotations

import gc
import types
from typing import Any

import peewee
import pytest

from plugins.budgets.alerts import BudgetAlertSent, _reached_first, raise_crossing_alerts
from plugins.budgets.common import Guarded
from proxy.call.alerts import Alert
from proxy.call.auth import hash_key
from proxy.hookspecs import hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key
from tests.support.budgets import (
    CALL_COST,
    budget_config,
    chat,
    make_budget,
    make_customer,
    make_key,
    make_user,
)

BUDGET_EVENTS = {"threshold_crossed", "budget_crossed", "soft_budget_crossed"}


class AlertCapture:
    """A throw-away plugin that keeps every budget alert it is handed."""

    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if alert.event in BUDGET_EVENTS:
            self.alerts.append(alert)


@pytest.fixture
def capture() -> AlertCapture:
    return AlertCapture()


def events_per_call(app: Any, capture: AlertCapture, calls: int, **call: Any) -> dict[int, list]:
    """Make ``calls`` calls; which alerts (event, event_group) each one raised."""
    seen: dict[int, list] = {}
    for n in range(1, calls + 1):
        before = len(capture.alerts)
        assert chat(app, **call).status_code == 200
        raised = [(a.event, a.event_group) for a in capture.alerts[before:]]
        if raised:
            seen[n] = raised
    return seen


def test_key_thresholds_and_budget_are_each_raised_once_by_the_crossing_call(
    db_url, make_app, capture
) -> None:
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    top = 20.5 * CALL_COST  # 85% inside call 18, 95% inside call 20, 100% inside call 21
    plain = make_key(max_budget=top, key_alias="team-a")
    seen = events_per_call(app, capture, 21, key=plain)
    assert seen == {
        18: [("threshold_crossed", "key")],
        20: [("threshold_crossed", "key")],
        21: [("budget_crossed", "key")],
    }
    assert chat(app, plain).status_code == 401
    with database.connection_context():
        spend = Key.get_by_id(hash_key(plain)).spend
    last = capture.alerts[-1]
    assert last.spend == spend and last.max_budget == top
    assert last.token == hash_key(plain) and last.key_alias == "team-a"
    assert (
        last.event_message == f"Key budget crossed. Key=team-a, spend={spend!r}, max_budget={top!r}"
    )
    assert capture.alerts[0].event_message.startswith("Key crossed 85% of its budget. Key=team-a")


def test_one_call_across_every_line_raises_each_once(db_url, make_app, capture) -> None:
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    plain = make_key(max_budget=0.5 * CALL_COST)
    assert events_per_call(app, capture, 1, key=plain) == {
        1: [("threshold_crossed", "key"), ("threshold_crossed", "key"), ("budget_crossed", "key")]
    }


def test_soft_budget_raises_once_and_never_blocks(db_url, make_app, capture) -> None:
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    plain = make_key(soft_budget=2.5 * CALL_COST)
    assert events_per_call(app, capture, 5, key=plain) == {3: [("soft_budget_crossed", "key")]}
    assert "soft_budget=" in capture.alerts[0].event_message


def test_soft_budget_of_a_customer_budget_row(db_url, make_app, capture) -> None:
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    make_customer("soft-c", budget_id=make_budget(soft_budget=1.5 * CALL_COST))
    assert events_per_call(app, capture, 3, user="soft-c") == {
        2: [("soft_budget_crossed", "customer")]
    }
    assert capture.alerts[0].customer_id == "soft-c"


def test_alerts_fire_again_in_the_next_budget_period(db_url, make_app, capture) -> None:
    app = make_app(budget_config(db_url), plugins=[("capture", capture)])
    plain = make_key(max_budget=1.5 * CALL_COST, budget_duration="30d", budget_reset_at=4e9)
    crossing = [
        ("threshold_crossed", "key"),
        ("threshold_crossed", "key"),
        ("budget_crossed", "key"),
    ]
    assert events_per_call(app, capture, 2, key=plain) == {2: crossing}
    assert chat(app, plain).status_code == 401
    # The period ends: the next call resets the key and a new period begins.
    with database.connection_context():
        Key.update(budget_reset_at=1.0).where(Key.token == hash_key(plain)).execute()
    assert events_per_call(app, capture, 2, key=plain) == {2: crossing}


def test_user_customer_and_proxy_alerts_name_their_group(db_url, make_app, capture) -> None:
    config = budget_config(
        db_url,
        litellm_settings={"max_budget": 100 * CALL_COST, "max_user_budget": 0.5 * CALL_COST},
    )
    app = make_app(config, plugins=[("capture", capture)])
    make_user("u1", max_budget=0.5 * CALL_COST, user_email="u1@example.com")
    plain = make_key(user_id="u1")
    chat(app, plain, user="cust-1")
    budget_crossed = {a.event_group: a for a in capture.alerts if a.event == "budget_crossed"}
    assert set(budget_crossed) == {"internal_user", "customer"}
    user_alert = budget_crossed["internal_user"]
    assert user_alert.user_id == "u1" and user_alert.user_email == "u1@example.com"
    assert user_alert.event_message.startswith("User budget crossed. User=u1, spend=")
    assert budget_crossed["customer"].customer_id == "cust-1"
    assert budget_crossed["customer"].event_message.startswith(
        "Customer budget crossed. Customer=cust-1, spend="
    )
    # The proxy: 85% of 100 calls is crossed by call 86 (one made above).
    capture.alerts.clear()
    for n in range(2, 87):
        assert chat(app).status_code == 200, n
    assert [(a.event, a.event_group) for a in capture.alerts] == [("threshold_crossed", "proxy")]
    assert capture.alerts[0].event_message.startswith("Proxy crossed 85% of its budget. spend=")


def test_a_disabled_budget_plugin_raises_no_alerts(db_url, make_app, capture) -> None:
    config = budget_config(db_url, plugins={"disable": ["key_budget"]})
    app = make_app(config, plugins=[("capture", capture)])
    plain = make_key(max_budget=0.5 * CALL_COST, soft_budget=0.1 * CALL_COST)
    assert events_per_call(app, capture, 2, key=plain) == {}


# --- exactly once despite float rounding ------------------------------------


def no_message(spend: float, top: float) -> str:
    return ""


def crossings_of(
    guarded: Guarded, new: float, cost: float, key_hash: str | None = None
) -> list[Alert]:
    """The budget_crossed alerts one settle raises for ``guarded``, when the
    ledger read back ``new`` as its counter after adding ``cost``."""
    ctx: Any = types.SimpleNamespace(
        spend_after={guarded.kind: new},
        alerts=[],
        key_hash=key_hash,
        end_user_id=None,
        user_id=None,
        team_id=None,
        user=None,
        key=None,
    )
    with database.connection_context():
        raise_crossing_alerts(ctx, guarded, cost)
    return [a for a in ctx.alerts if a.event == "budget_crossed"]


def test_two_calls_that_both_look_like_the_crossing_raise_one_alert(db_url, make_app) -> None:
    make_app(budget_config(db_url))  # creates the tables on this database

    def settle(new: float, cost: float) -> list[Alert]:
        return crossings_of(
            Guarded("key", "h", "Key=k", 0.0, 1.0, None, 0.0, no_message), new, cost, "h"
        )

    # A takes spend from 0.75 to exactly 1.0; B's new - cost rounds to just below 1.0.
    assert len(settle(1.0, 0.25)) == 1
    b = 0.08293520492002723
    assert (1.0 + b) - b < 1.0
    assert settle(1.0 + b, b) == []


@pytest.mark.parametrize("kind", ["proxy", "key", "user", "team", "customer"])
def test_a_crossing_two_concurrent_calls_both_missed_is_raised_by_the_next(
    db_url, make_app, kind
) -> None:
    """Every counter is striped: two concurrent calls may each read back a total
    below the line their sum crosses. The next call, already past it, raises it once."""
    make_app(budget_config(db_url))

    def settle(new: float, cost: float) -> list[Alert]:
        return crossings_of(Guarded(kind, "1", "", 0.0, 1.0, None, 123.0, no_message), new, cost)

    # A and B (0.3 each, from 0.5) each read back 0.8: neither sees the line.
    assert settle(0.8, 0.3) == [] and settle(0.8, 0.3) == []
    # C reads 1.4 (A, B and itself): old = 1.1 is past the line, yet it is the first to see it.
    assert len(settle(1.4, 0.3)) == 1
    assert settle(1.7, 0.3) == [] and settle(1.7, 0.3) == []


def test_marks_remembered_for_a_database_gone_do_not_silence_a_new_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A process remembers the marks it saw taken, per database: a new database
    has none taken, even one that CPython placed where a freed one was (the
    fast tier hands each worker process about a thousand databases)."""
    guarded = Guarded("proxy", "", "", 0.0, 1.0, None, 0.0, lambda spend, top: "")

    def new_database() -> int:
        database.obj = peewee.SqliteDatabase(":memory:")  # the one before is freed
        with database.connection_context():
            database.create_tables([BudgetAlertSent])
            # The first call past the line takes the mark; the next finds it taken.
            first = _reached_first(guarded, "budget_crossed", 1.0, 2.0)
            again = _reached_first(guarded, "budget_crossed", 1.0, 3.0)
        assert (first, again) == (True, False)
        return id(database.obj)

    monkeypatch.setattr(database, "obj", None)  # the test's own; restored after
    addresses = {new_database()}
    for _ in range(50):  # until one lands on a freed database's address
        gc.collect()
        address = new_database()
        if address in addresses:
            break
        addresses.add(address)
    else:
        pytest.skip("no database object was placed where a freed one was")
