"""The Keys tab in Debian's Chromium: create with every field, edit, block, regenerate.

Each step is checked twice: on the page, and through the admin API or a real
LLM call (the oracle is the server's answer, never the page's own state).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.proxy_server import ProxyServer
from tests.ui.support import api, chat, open_tab

pytestmark = pytest.mark.slow


def _key_info(proxy: ProxyServer, key: str) -> dict[str, Any]:
    return api(proxy, "GET", "/key/info", params={"key": key}).json()["info"]


def test_key_lifecycle_create_edit_block_regenerate(
    admin: Any, proxy: ProxyServer, save_screenshot: Callable[[Any, str], Path]
) -> None:
    page = admin
    page.on("dialog", lambda dialog: dialog.accept())
    open_tab(page, "Keys")
    page.get_by_role("button", name="+ Create Key").click()
    dialog = page.locator("#key-dialog")
    values = {
        "Alias": "lifecycle-key",
        "User ID": "lifecycle-user",
        "Team ID": "lifecycle-team",
        "Models": "gpt-3.5-turbo",
        "Max budget (USD)": "10",
        "Soft budget (USD)": "8.5",
        "Budget duration": "30d",
        "RPM limit": "4",
        "TPM limit": "20000",
        "Parallel requests": "2",
        "Expires after": "30d",
        "Metadata (JSON)": '{"env": "prod"}',
    }
    for label, value in values.items():
        dialog.get_by_label(label, exact=True).fill(value)
    save_screenshot(page, "key-create")
    dialog.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key-value")).to_have_value(re.compile(r"^sk-\S{40,}$"))
    plain = page.locator("#new-key-value").input_value()
    row = page.locator("#keys tbody tr", has_text="lifecycle-key")
    expect(row.locator(".limits")).to_have_text("4 rpm20,000 tpm2 parallel")
    info = _key_info(proxy, plain)
    assert (info["user_id"], info["team_id"], info["models"]) == (
        "lifecycle-user",
        "lifecycle-team",
        ["gpt-3.5-turbo"],
    )
    assert (info["max_budget"], info["soft_budget"], info["budget_duration"]) == (10.0, 8.5, "30d")
    assert (info["rpm_limit"], info["tpm_limit"], info["max_parallel_requests"]) == (4, 20000, 2)
    assert info["metadata"] == {"env": "prod"} and info["expires"] is not None
    assert chat(proxy, "lifecycle-customer", key=plain).status_code == 200

    row.get_by_role("button", name="Edit").click()
    expect(dialog.get_by_label("RPM limit")).to_have_value("4")
    expect(dialog.get_by_label("Metadata (JSON)")).to_have_value('{"env":"prod"}')
    dialog.get_by_label("RPM limit").fill("9")
    dialog.get_by_label("Max budget (USD)").fill("")
    dialog.get_by_role("button", name="Save").click()
    expect(dialog).to_be_hidden()
    expect(row).to_contain_text("9 rpm")
    expect(row).to_contain_text("unlimited")
    edited = _key_info(proxy, plain)
    assert edited["rpm_limit"] == 9 and edited["max_budget"] is None
    assert edited["expires"] == info["expires"] and edited["soft_budget"] == 8.5

    row.get_by_role("button", name="Block").click()
    expect(row.locator(".badge")).to_have_text("Blocked")
    refused = chat(proxy, "lifecycle-customer", key=plain)
    assert refused.status_code == 401 and "Key is blocked" in refused.json()["error"]["message"]
    save_screenshot(page, "keys")
    row.get_by_role("button", name="Unblock").click()
    expect(row.locator(".badge")).to_have_text("Active")
    assert chat(proxy, "lifecycle-customer", key=plain).status_code == 200

    spend = _key_info(proxy, plain)["spend"]
    row.get_by_role("button", name="Regenerate").click()
    expect(page.locator("#new-key-title")).to_have_text("New secret for lifecycle-key")
    fresh = page.locator("#new-key-value").input_value()
    assert fresh.startswith("sk-") and fresh != plain
    expect(row).to_contain_text(f"sk-...{fresh[-4:]}")
    assert chat(proxy, "lifecycle-customer", key=plain).status_code == 401
    assert chat(proxy, "lifecycle-customer", key=fresh).status_code == 200
    kept = _key_info(proxy, fresh)
    assert kept["rpm_limit"] == 9 and kept["spend"] > spend > 0

    dialog_errors = page.locator("#key-dialog")
    row.get_by_role("button", name="Edit").click()
    dialog_errors.get_by_label("Metadata (JSON)").fill("{not json")
    dialog_errors.get_by_role("button", name="Save").click()
    expect(dialog_errors.locator('[data-error-for="metadata"]')).to_contain_text("metadata")
    dialog_errors.get_by_role("button", name="Cancel").click()

    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    assert chat(proxy, "lifecycle-customer", key=fresh).status_code == 401
