"""The admin UI in Debian's Chromium against real gunicorn (two workers, SQLite).

What an operator sees and does: log in with the master key, create the
``my-free-tier`` budget of the seeds, put a customer on it, watch its spend
rise, block it, and see its next call refused. Each tab is saved as a
screenshot: under ``docs/ui/`` with COMPTROLLER_UPDATE_SCREENSHOTS=1, else in
a temporary directory.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import expect

from tests.support.proxy_server import ProxyServer
from tests.ui.support import MASTER_KEY, api, budget_ids, chat, log_in, open_tab

pytestmark = pytest.mark.slow


def _dollars(text: str) -> float:
    match = re.search(r"\$([0-9.,]+)", text)
    assert match, f"no amount in {text!r}"
    return float(match.group(1).replace(",", ""))


def save_new_budget(page: Any, budget_id: str, max_budget: str) -> Any:
    """Fill the "+ Create Budget" dialog and press Save; the dialog."""
    page.get_by_role("button", name="+ Create Budget").click()
    dialog = page.locator("#budget-dialog")
    dialog.get_by_label("Budget ID").fill(budget_id)
    dialog.get_by_label("Max budget (USD)").fill(max_budget)
    dialog.get_by_role("button", name="Save").click()
    return dialog


def test_seed_flow_budget_customer_spend_block(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    dialog = save_new_budget(page, "my-free-tier", "4")
    expect(dialog).to_be_hidden()
    row = page.locator("#budgets tbody tr", has_text="my-free-tier")
    expect(row).to_contain_text("$4.00")
    tiers = {b["budget_id"]: b for b in api(proxy, "GET", "/budget/list").json()}
    assert tiers["my-free-tier"]["max_budget"] == 4.0
    save_screenshot(page, "budgets")

    open_tab(page, "Customers")
    page.get_by_role("button", name="+ Create Customer").click()
    dialog = page.locator("#customer-dialog")
    dialog.get_by_label("Customer ID").fill("my-customer-id")
    dialog.get_by_label("Budget tier").select_option("my-free-tier")
    dialog.get_by_role("button", name="Create").click()
    row = page.locator("#customers tbody tr", has_text="my-customer-id")
    expect(row.get_by_label("Budget tier of my-customer-id")).to_have_value("my-free-tier")
    expect(row.locator(".spend")).to_have_text("$0.00 of $4.00")

    for _ in range(3):
        assert chat(proxy, "my-customer-id").status_code == 200
    page.reload()
    expect(row.locator(".spend")).not_to_have_text("$0.00 of $4.00")
    shown = _dollars(row.locator(".spend").inner_text())
    info = api(proxy, "GET", "/customer/info", params={"end_user_id": "my-customer-id"}).json()
    assert shown > 0
    assert shown == pytest.approx(info["spend"], abs=5e-7)

    row.get_by_role("button", name="Block").click()
    expect(row.locator(".badge")).to_have_text("Blocked")
    refused = chat(proxy, "my-customer-id")
    assert refused.status_code == 403
    assert "User blocked from making LLM API Calls" in refused.json()["error"]["message"]
    save_screenshot(page, "customers")

    row.get_by_role("button", name="Unblock").click()
    expect(row.locator(".badge")).to_have_text("Active")
    assert chat(proxy, "my-customer-id").status_code == 200


def test_wrong_master_key_is_refused_at_login(page: Any) -> None:
    log_in(page, "sk-not-the-master-key")
    expect(page.locator("#login-error")).to_have_text("That is not the master key.")
    assert "/ui/login" in page.url
    page.goto("/ui/budgets")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/budgets$"))


def test_ui_pages_without_a_session_redirect_to_login(page: Any, proxy: ProxyServer) -> None:
    for path in ("/ui", "/ui/budgets", "/ui/customers", "/ui/keys", "/ui/spend"):
        resp = requests.get(f"{proxy.url}{path}", allow_redirects=False, timeout=5)
        assert resp.status_code in (302, 308), path
    resp = requests.get(f"{proxy.url}/ui/keys", allow_redirects=False, timeout=5)
    assert resp.headers["Location"] == "/ui/login?next=/ui/keys"
    page.goto("/ui")
    expect(page.get_by_label("Master key")).to_be_visible()
    log_in(page)
    expect(page).to_have_url(re.compile(r"/ui/budgets$"))


def test_admin_api_refuses_the_session_cookie_without_csrf_header(proxy: ProxyServer) -> None:
    browser_like = requests.Session()
    login = browser_like.post(
        f"{proxy.url}/ui/login", data={"master_key": MASTER_KEY}, allow_redirects=False
    )
    assert login.status_code == 303
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    page = browser_like.get(f"{proxy.url}/ui/budgets").text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    body = {"budget_id": "forged-tier", "max_budget": 1}

    no_header = browser_like.post(f"{proxy.url}/budget/new", json=body)
    wrong_header = browser_like.post(
        f"{proxy.url}/budget/new", json=body, headers={"X-CSRF-Token": token[::-1]}
    )
    assert no_header.status_code == 401
    assert no_header.json()["error"]["type"] == "auth_error"
    assert wrong_header.status_code == 401
    ids = budget_ids(proxy)
    assert "forged-tier" not in ids

    with_header = browser_like.post(
        f"{proxy.url}/budget/new", json=body, headers={"X-CSRF-Token": token}
    )
    assert with_header.status_code == 200
    assert with_header.json()["budget_id"] == "forged-tier"
    assert api(proxy, "POST", "/budget/delete", json={"id": "forged-tier"}).status_code == 200


def test_budget_delete_is_refused_while_a_customer_uses_it(admin: Any, proxy: ProxyServer) -> None:
    page = admin
    assert api(proxy, "POST", "/budget/new", json={"budget_id": "tier-in-use"}).ok
    assert api(proxy, "POST", "/budget/new", json={"budget_id": "tier-unused"}).ok
    customer = {"user_id": "tier-user", "budget_id": "tier-in-use"}
    assert api(proxy, "POST", "/customer/new", json=customer).ok
    page.on("dialog", lambda dialog: dialog.accept())
    page.reload()

    used = page.locator("#budgets tbody tr", has_text="tier-in-use")
    used.get_by_role("button", name="Delete").click()
    notice = page.locator("#notice")
    expect(notice).to_contain_text("tier-in-use was not deleted")
    expect(notice).to_contain_text("used by customers: tier-user")
    expect(used).to_be_visible()

    page.locator("#budgets tbody tr", has_text="tier-unused").get_by_role(
        "button", name="Delete"
    ).click()
    expect(page.locator("#budgets tbody tr", has_text="tier-unused")).to_have_count(0)
    ids = budget_ids(proxy)
    assert "tier-in-use" in ids and "tier-unused" not in ids


def test_validation_errors_appear_next_to_their_field(admin: Any, proxy: ProxyServer) -> None:
    page = admin
    dialog = save_new_budget(page, "typo-tier", "four dollars")
    expect(dialog.locator('[data-error-for="max_budget"]')).to_contain_text("max_budget")
    expect(dialog.get_by_label("Max budget (USD)")).to_have_attribute("aria-invalid", "true")

    dialog.get_by_label("Max budget (USD)").fill("4")
    dialog.get_by_label("RPM limit").fill("1.5")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator('[data-error-for="rpm_limit"]')).to_contain_text("rpm_limit")
    expect(dialog.locator('[data-error-for="max_budget"]')).to_be_hidden()

    dialog.get_by_label("RPM limit").fill("")
    dialog.get_by_label("Budget duration").fill("fortnightly")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator('[data-error-for="budget_duration"]')).to_contain_text("budget_duration")
    ids = budget_ids(proxy)
    assert "typo-tier" not in ids


def test_edit_budget_changes_its_limits(admin: Any, proxy: ProxyServer) -> None:
    page = admin
    assert api(proxy, "POST", "/budget/new", json={"budget_id": "edit-me", "max_budget": 2}).ok
    page.reload()
    page.locator("#budgets tbody tr", has_text="edit-me").get_by_role("button", name="Edit").click()
    dialog = page.locator("#budget-dialog")
    expect(dialog.get_by_label("Budget ID")).to_have_value("edit-me")
    expect(dialog.get_by_label("Max budget (USD)")).to_have_value("2")
    dialog.get_by_label("Max budget (USD)").fill("")
    dialog.get_by_label("RPM limit").fill("12")
    dialog.get_by_role("button", name="Save").click()
    row = page.locator("#budgets tbody tr", has_text="edit-me")
    expect(row).to_contain_text("unlimited")
    expect(row).to_contain_text("12")
    saved = api(proxy, "POST", "/budget/info", json={"budgets": ["edit-me"]}).json()[0]
    assert saved["max_budget"] is None and saved["rpm_limit"] == 12


def test_key_is_shown_once_works_and_can_be_deleted(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    open_tab(page, "Keys")
    page.get_by_role("button", name="+ Create Key").click()
    dialog = page.locator("#key-dialog")
    dialog.get_by_label("Alias").fill("billing-service")
    dialog.get_by_label("User ID").fill("alice")
    dialog.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).to_have_value(re.compile(r"^sk-\S{40,}$"))
    plain = page.locator("#new-key-value").input_value()
    row = page.locator("#keys tbody tr", has_text="billing-service")
    expect(row).to_contain_text("alice")
    expect(row).to_contain_text(f"sk-...{plain[-4:]}")
    assert chat(proxy, "key-tab-customer", key=plain).status_code == 200
    save_screenshot(page, "keys")

    page.reload()
    expect(page.locator("#new-key")).to_be_hidden()
    assert plain not in page.content()
    expect(row.locator("td.num").first).not_to_have_text("$0.00")

    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert chat(proxy, "key-tab-customer", key=plain).status_code == 401


def test_spend_tab_shows_today_and_the_top_customers_and_keys(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    made = api(proxy, "POST", "/key/generate", json={"key_alias": "spend-tab-key"}).json()
    for _ in range(4):
        assert chat(proxy, "spend-tab-customer", key=made["key"]).status_code == 200
    open_tab(page, "Spend")

    customer = page.locator("#top-customers tbody tr", has_text="spend-tab-customer")
    expect(customer.locator("td").nth(1)).to_have_text("4")
    key = page.locator("#top-keys tbody tr", has_text="spend-tab-key")
    expect(key.locator("td").nth(2)).to_have_text("4")
    key_spend = api(proxy, "GET", "/key/info", params={"key": made["key"]}).json()["info"]["spend"]
    assert _dollars(key.locator("td").nth(3).inner_text()) == pytest.approx(key_spend, abs=5e-7)

    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    daily = api(proxy, "GET", "/global/spend/daily", params={"days": 30}).json()
    assert daily["days"][-1]["date"] == today
    bar = page.locator(f'#daily-chart rect.bar[data-date="{today}"]')
    expect(bar).to_have_count(1)
    expect(bar.locator("title")).to_contain_text(f"({daily['days'][-1]['requests']} requests)")
    total = api(proxy, "GET", "/global/spend").json()["spend"]
    assert _dollars(page.locator("#proxy-spend").inner_text()) == pytest.approx(total, abs=5e-7)
    save_screenshot(page, "spend")


def test_logout_ends_the_session(admin: Any) -> None:
    page = admin
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Master key")).to_be_visible()
    page.goto("/ui/customers")
    expect(page).to_have_url(re.compile(r"/ui/login\?next=/ui/customers$"))
