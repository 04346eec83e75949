"""Fixtures of the admin UI's browser tests: a gunicorn proxy and Debian's Chromium.

The browser is Debian's ``chromium`` package (``tests/ui/install_browser.sh``)
driven by Playwright over CDP; Playwright's own browser download is never
used. Without ``/usr/bin/chromium`` the browser tests are skipped, except
under CI (``CI`` set), where they must run.
"""

from __future__ import annotations

import os
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
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda err: errors.append(str(err)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


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
