"""Helpers of the admin UI's browser tests."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import requests

from tests.support.proxy_server import ROOT, ProxyServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
# The browser tests save a screenshot of each tab into a temporary directory,
# so that a test run leaves the work tree clean. With
# COMPTROLLER_UPDATE_SCREENSHOTS=1 they refresh the tracked ones in docs/ui/
# instead (the README shows them).
DOCS_SCREENSHOTS = ROOT / "docs" / "ui"
UPDATE_SCREENSHOTS = "COMPTROLLER_UPDATE_SCREENSHOTS"
MASTER_KEY = "sk-ui-master-5f3a"
MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}
MODEL = "gpt-3.5-turbo"


def log_in(page: Any, key: str = MASTER_KEY) -> None:
    page.goto("/ui/login")
    page.get_by_label("Master key").fill(key)
    page.get_by_role("button", name="Log in").click()


def api(proxy: ProxyServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    """The admin API with the master key, as curl would call it."""
    return requests.request(method, f"{proxy.url}{path}", headers=MASTER, timeout=10, **kwargs)


def chat(proxy: ProxyServer, user: str, key: str = MASTER_KEY) -> requests.Response:
    return requests.post(
        f"{proxy.url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": MODEL, "user": user, "messages": [{"role": "user", "content": "hi"}]},
        timeout=10,
    )


def budget_ids(proxy: ProxyServer) -> list[str]:
    return [b["budget_id"] for b in api(proxy, "GET", "/budget/list").json()]


def screenshot_dir(tmp_path_factory: Any) -> Path:
    """docs/ui/ under COMPTROLLER_UPDATE_SCREENSHOTS=1, else a new temporary directory."""
    if os.environ.get(UPDATE_SCREENSHOTS) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS
    return Path(tmp_path_factory.mktemp("screenshots"))


def screenshot(page: Any, directory: Path, tab: str) -> Path:
    path = directory / f"{tab}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def open_tab(page: Any, name: str) -> None:
    """Follow the top bar's link to tab ``name`` and wait for the new page's load
    event, so its script has run and its buttons answer (a click before that
    would be lost)."""
    with page.expect_navigation():
        page.get_by_role("link", name=name).click()
