"""Helpers of the admin UI's browser tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests

from tests.support.proxy_server import ROOT, ProxyServer

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
SCREENSHOTS = ROOT / "docs" / "ui"
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


def screenshot(page: Any, tab: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{tab}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
