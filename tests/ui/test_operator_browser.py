"""Teams, users, request logs and the spend report in Debian's Chromium.

What an operator coming from LiteLLM does without curl: a team whose budget
refuses its keys' calls, a user with its keys, the logs filtered and exported
as CSV, a report over a date range; the pages at 420 px and the UI's 404 page.
Every check compares the page with the admin API's own answer or with a real
LLM call's outcome.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.proxy_server import ProxyServer
from tests.ui.support import api, chat, open_tab

pytestmark = pytest.mark.slow


def test_team_budget_refuses_its_keys_calls(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    open_tab(page, "Teams")
    page.get_by_role("button", name="+ Create Team").click()
    dialog = page.locator("#team-dialog")
    dialog.get_by_label("Team ID").fill("core-infra")
    dialog.get_by_label("Name").fill("Core infrastructure")
    dialog.get_by_label("Max budget (USD)").fill("0.00003")
    dialog.get_by_label("RPM limit").fill("100")
    dialog.get_by_label("Members").fill("ops-alice, ops-bob")
    dialog.get_by_role("button", name="Save").click()
    row = page.locator("#teams tbody tr", has_text="core-infra")
    expect(row).to_contain_text("ops-alice, ops-bob")
    expect(row.locator(".spend")).to_have_text("$0.00 of $0.00003")

    key = api(proxy, "POST", "/key/generate", json={"team_id": "core-infra"}).json()["key"]
    statuses = [chat(proxy, "team-customer", key=key).status_code for _ in range(3)]
    assert statuses[0] == 200 and statuses[-1] == 401
    refused = chat(proxy, "team-customer", key=key).json()["error"]["message"]
    assert "Current Team Spend:" in refused and "Max Budget for Team: 3e-05" in refused
    spend = api(proxy, "GET", "/team/info", params={"team_id": "core-infra"}).json()
    page.reload()
    expect(row.locator(".spend")).not_to_have_text("$0.00 of $0.00003")
    shown = row.locator(".spend").inner_text().split(" of ")[0]
    assert float(shown.lstrip("$").replace(",", "")) == pytest.approx(
        spend["team_info"]["spend"], rel=1e-6
    )
    save_screenshot(page, "teams")

    row.get_by_role("button", name="Edit").click()
    dialog.get_by_label("Max budget (USD)").fill("")
    dialog.get_by_label("Members").fill("ops-alice")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(row).not_to_contain_text("ops-bob")
    assert chat(proxy, "team-customer", key=key).status_code == 200
    team = api(proxy, "GET", "/team/info", params={"team_id": "core-infra"}).json()["team_info"]
    assert team["max_budget"] is None and team["members"] == ["ops-alice"]


def test_user_created_edited_and_its_keys_shown(admin: Any, proxy: ProxyServer) -> None:
    page = admin
    open_tab(page, "Users")
    page.get_by_role("button", name="+ Create User").click()
    dialog = page.locator("#user-dialog")
    dialog.get_by_label("User ID").fill("krrish@berri.ai")
    dialog.get_by_label("Max budget (USD)").fill("1250.5")
    dialog.get_by_label("TPM limit").fill("50000")
    dialog.get_by_role("button", name="Save").click()
    expect(page.locator("#new-key-value")).to_have_value(re.compile(r"^sk-\S{40,}$"))
    first_key = page.locator("#new-key-value").input_value()
    row = page.locator("#users tbody tr", has_text="krrish@berri.ai")
    expect(row.locator(".spend")).to_have_text("$0.00 of $1,250.50")
    expect(row.locator(".limits")).to_have_text("50,000 tpm")
    assert chat(proxy, "user-customer", key=first_key).status_code == 200

    row.get_by_role("button", name="Edit").click()
    dialog.get_by_label("RPM limit").fill("7")
    dialog.get_by_role("button", name="Save").click()
    expect(row.locator(".limits")).to_contain_text("7 rpm")
    saved = api(proxy, "GET", "/user/info", params={"user_id": "krrish@berri.ai"}).json()
    assert saved["user_info"]["rpm_limit"] == 7 and saved["user_info"]["max_budget"] == 1250.5

    row.get_by_role("button", name="Keys").click()
    details = page.locator("#users tr.details")
    expect(details).to_contain_text(f"sk-...{first_key[-4:]}")
    key_spend = saved["keys"][0]["spend"]
    assert key_spend > 0
    expect(details).to_contain_text(f"${key_spend:.10f}".rstrip("0"))

    page.on("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Block").click()
    expect(row.locator(".badge")).to_have_text("Blocked")
    assert chat(proxy, "user-customer", key=first_key).status_code == 401
    row.get_by_role("button", name="Unblock").click()
    expect(row.locator(".badge")).to_have_text("Active")
    assert chat(proxy, "user-customer", key=first_key).status_code == 200
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert chat(proxy, "user-customer", key=first_key).status_code == 401


def test_logs_filter_page_and_export_csv(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    made = api(proxy, "POST", "/key/generate", json={"key_alias": "logs-key"}).json()
    for customer in ("logs-a", "logs-b", "logs-a"):
        assert chat(proxy, customer, key=made["key"]).status_code == 200
    open_tab(page, "Logs")
    filters = page.locator("#log-filters")
    filters.get_by_label("Customer").fill("logs-a")
    filters.get_by_role("button", name="Filter").click()
    rows = page.locator("#logs tbody tr")
    expect(rows).to_have_count(2)
    expected = api(proxy, "GET", "/spend/logs", params={"end_user": "logs-a", "order": "desc"})
    newest = expected.json()[0]
    expect(rows.first).to_have_attribute("data-request-id", newest["request_id"])
    expect(rows.first).to_contain_text(f"{newest['prompt_tokens']} / {newest['completion_tokens']}")
    save_screenshot(page, "logs")

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Export CSV").click()
    text = Path(download_info.value.path()).read_text()
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [r["request_id"] for r in exported] == [r["request_id"] for r in expected.json()]
    assert float(exported[0]["spend"]) == pytest.approx(newest["spend"], rel=1e-9)

    page.get_by_role("button", name="Time (UTC)").click()
    expect(page.locator("#time-head")).to_have_attribute("aria-sort", "ascending")
    expect(rows.first).to_have_attribute("data-request-id", expected.json()[-1]["request_id"])

    filters.get_by_label("Status").select_option("failure")
    filters.get_by_role("button", name="Filter").click()
    expect(page.locator("#logs + .empty")).to_be_visible()


def test_spend_report_over_a_date_range(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    key = api(proxy, "POST", "/key/generate", json={"team_id": "report-team"}).json()["key"]
    assert chat(proxy, "report-customer", key=key).status_code == 200
    today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    open_tab(page, "Spend")
    form = page.locator("#report-form")
    form.get_by_label("From").fill("2020-01-01")
    form.get_by_label("To").fill("2020-01-31")
    form.get_by_role("button", name="Show").click()
    expect(page.locator("#report + .empty")).to_be_visible()

    form.get_by_label("From").fill(today)
    form.get_by_label("To").fill(today)
    form.get_by_label("Group by").select_option("customer")
    form.get_by_role("button", name="Show").click()
    row = page.locator("#report tbody tr", has_text="report-customer")
    expect(row).to_contain_text(today)
    report = api(
        proxy,
        "GET",
        "/global/spend/report",
        params={"start_date": today, "end_date": today, "group_by": "customer"},
    ).json()
    group = next(g for g in report[0]["customers"] if g["customer"] == "report-customer")
    expect(row.locator("td").nth(3)).to_have_text(str(group["requests"]))
    expect(page.locator("#report-chart rect.bar")).to_have_count(1)

    form.get_by_label("From").fill(today)
    form.get_by_label("To").fill("2020-01-01")
    form.get_by_role("button", name="Show").click()
    expect(form.locator(".form-error")).to_contain_text("start_date")
    save_screenshot(page, "spend-report")


def test_narrow_screen_and_unknown_page(
    browser: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    from tests.ui.support import log_in

    context = browser.new_context(base_url=proxy.url, viewport={"width": 420, "height": 860})
    context.set_default_timeout(5000)
    page = context.new_page()
    try:
        log_in(page)
        page.wait_for_url("**/ui/budgets")
        page.goto("/ui/keys")
        expect(page.get_by_role("button", name="Log out")).to_be_in_viewport()
        expect(page.get_by_role("link", name="Spend")).to_be_attached()
        width = page.evaluate("document.documentElement.scrollWidth")
        widest = page.evaluate(
            "[...document.querySelectorAll('body *')]"
            ".filter(e => e.getBoundingClientRect().right > 421"
            " && e.parentElement.getBoundingClientRect().right <= 421)"
            ".slice(0, 5).map(e => e.tagName + '.' + e.className + '#' + e.id)"
        )
        assert width <= 420, f"the page is {width} px wide at 420 px: {widest}"
        save_screenshot(page, "keys-420px")
        response = page.goto("/ui/no-such-page")
        assert response is not None and response.status == 404
        expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
        expect(page.get_by_role("link", name="Keys")).to_be_visible()
    finally:
        context.close()
