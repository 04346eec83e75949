"""Fixtures of the admin UI's browser tests: a gunicorn proxy and Debian's Chromium.

The browser is Debian's ``chromium`` package (``tests/ui/install_browser.sh``)
driven by Playwright over CDP; Playwright's own browser download is never
used. Without ``/usr/bin/chromium`` the browser tests are skipped, except
under CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.proxy_server import ProxyServer
from tests.ui.support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    MASTER_KEY,
    MODEL,
    log_in,
    screenshot,
    screenshot_dir,
)


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing under CI: run tests/ui/install_browser.sh first")
    pytest.skip(f"{CHROMIUM} is missing (install it with tests/ui/install_browser.sh)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyServer]:
    """Two gunicorn workers: a login made by one worker must hold on the other."""
    tmp = tmp_path_factory.mktemp("ui")
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"mock/{MODEL}",
                    "input_cost_per_token": 0.0000015,
                    "output_cost_per_token": 0.000002,
                },
            }
        ],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": f"sqlite:///{tmp / 'ui.db'}",
        },
    }
    with ProxyServer(config, tmp, workers=2, threads=4, name="ui") as server:
        yield server


@pytest.fixture
def page(browser: Any, proxy: ProxyServer) -> Iterator[Any]:
    """A fresh browser context (no cookies) on the proxy."""
    context = browser.new_context(base_url=proxy.url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    outside: list[str] = []
    context.route(
        re.compile(r"^(?!https?://127\.0\.0\.1[:/]).*"), lambda route: _refuse(route, outside)
    )
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("console", lambda msg: _console_error(msg, errors))
    tab.on("response", lambda resp: _failed_resource(resp, errors))
    yield tab
    context.close()
    assert not outside, f"requests that would have left the host: {outside}"
    assert not errors, f"errors on the page: {errors}"


def _refuse(route: Any, outside: list[str]) -> None:
    if not route.request.url.startswith(("data:", "blob:")):
        outside.append(route.request.url)
    route.abort()


def _console_error(msg: Any, errors: list[str]) -> None:
    # The API's own 4xx answers to fetch() are expected (the UI shows them); the
    # browser logs each as "Failed to load resource", which _failed_resource sorts out.
    if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
        errors.append(f"console: {msg.text}")


def _failed_resource(response: Any, errors: list[str]) -> None:
    """A page's own resources (script, style, icon, image) must all load."""
    kind = response.request.resource_type
    if response.status >= 400 and kind not in ("fetch", "xhr", "document"):
        errors.append(f"{kind} {response.url}: HTTP {response.status}")


@pytest.fixture
def admin(page: Any) -> Any:
    """A page logged in through the login form, on the Budgets tab."""
    log_in(page)
    page.wait_for_url("**/ui/budgets")
    return page


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tabs' screenshots go (see ``screenshot_dir`` in tests/ui/support.py)."""
    return screenshot_dir(tmp_path_factory)


@pytest.fixture
def save_screenshot(screenshots: Path) -> Callable[[Any, str], Path]:
    """``save_screenshot(page, "budgets")`` saves the page as ``budgets.png``."""
    return lambda page, tab: screenshot(page, screenshots, tab)
