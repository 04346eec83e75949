"""``plugins.disable`` turns exactly one budget check off, and the proxy keeps working.

One database holds an entity at its limit for every level; each level's
scenario is a call that only that level refuses. With one budget plugin
disabled, its scenario goes through and every other scenario is still
refused with its own message.
"""

from __future__ import annotations

from typing import Any

import pytest

from proxy.storage.counters import proxy_total
from proxy.storage.db import database
from tests.conftest import MASTER_KEY
from tests.support.budgets import (
    budget_config,
    chat,
    make_budget,
    make_customer,
    make_key,
    make_user,
    set_proxy_spend,
)

BUDGET_PLUGINS = [
    "proxy_budget",
    "key_budget",
    "user_budget",
    "end_user_budget",
    "default_end_user_budget",
]
MESSAGES = {
    "proxy_budget": "ExceededBudget: Proxy has exceeded its budget",
    "key_budget": "ExceededTokenBudget: Current spend for token: 1.0",
    "user_budget": "ExceededBudget: User spent-user has exceeded their budget",
    "end_user_budget": "ExceededBudget: User own-budget has exceeded their budget",
    "default_end_user_budget": "ExceededBudget: User on-default has exceeded their budget",
}


def _entities_at_their_limits() -> dict[str, Any]:
    """Rows for every scenario but the proxy's; the call each scenario makes."""
    make_user("spent-user", max_budget=1.0, spend=1.0)
    make_budget("default-tier", max_budget=1.0)
    make_customer("own-budget", spend=1.0, budget_id=make_budget(max_budget=1.0))
    make_customer("on-default", spend=1.0)
    return {
        "key_budget": {"key": make_key(max_budget=1.0, spend=1.0)},
        "user_budget": {"key": make_key(user_id="spent-user")},
        "end_user_budget": {"user": "own-budget"},
        "default_end_user_budget": {"user": "on-default"},
    }


@pytest.mark.parametrize("disabled", [None, *BUDGET_PLUGINS])
def test_disabling_a_budget_plugin_turns_off_exactly_its_check(
    db_url: str, make_app: Any, disabled: str | None
) -> None:
    config = budget_config(
        db_url,
        litellm_settings={"max_budget": 1.0, "max_end_user_budget_id": "default-tier"},
        plugins={"disable": [disabled] if disabled else []},
    )
    app = make_app(config)
    calls = _entities_at_their_limits()
    for name, call in calls.items():
        resp = chat(app, **call)
        if name == disabled:
            assert resp.status_code == 200, resp.get_json()
        else:
            assert resp.status_code == 401, (name, resp.get_json())
            assert MESSAGES[name] in resp.get_json()["error"]["message"]
    # The proxy's scenario last: once the proxy is at its limit, every call is.
    assert chat(app, MASTER_KEY).status_code == 200
    set_proxy_spend(1.0)
    resp = chat(app, MASTER_KEY)
    if disabled == "proxy_budget":
        assert resp.status_code == 200
    else:
        assert resp.status_code == 401
        assert MESSAGES["proxy_budget"] in resp.get_json()["error"]["message"]


def test_with_every_budget_plugin_disabled_the_proxy_still_serves_and_meters(
    db_url: str, make_app: Any
) -> None:
    config = budget_config(
        db_url,
        litellm_settings={"max_budget": 1.0, "max_end_user_budget_id": "default-tier"},
        general_settings={"budget_enforcement": "strict"},
        plugins={"disable": BUDGET_PLUGINS},
    )
    app = make_app(config)
    calls = _entities_at_their_limits()
    set_proxy_spend(1.0)
    for call in calls.values():
        assert chat(app, **call).status_code == 200
    with database.connection_context():
        assert proxy_total() > 1.0
