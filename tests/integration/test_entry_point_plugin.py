"""A third-party plugin, pip-installed as a real distribution, is found and used.

The test builds a tiny package in a temporary directory (a pyproject with an
entry point in the ``comptroller`` group), installs it into the running venv
with pip (no network: ``--no-index --no-build-isolation``), and uninstalls it
afterwards. The venv is shared with other test processes while it is
installed, so the plugin refuses only one end user, named at random, and
leaves every other call alone.
"""

from __future__ import annotations

import importlib
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from flask import Flask

from proxy.storage.models import SpendLog
from tests.conftest import MASTER, base_config
from tests.support.proxy_server import ProxyServer

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


class Installed:
    def __init__(self, tag: str) -> None:
        self.distribution = f"comptroller-throwaway-{tag}"
        self.plugin_name = f"throwaway_{tag}"
        self.module = f"comptroller_throwaway_{tag}"
        self.blocked_user = f"blocked-{tag}"
        self.message = f"refused by the {self.plugin_name} plugin"


def _pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args, "--disable-pip-version-check", "-q"],
        check=True,
        timeout=120,
        capture_output=True,
    )


def _write_distribution(root: Path, plugin: Installed) -> None:
    (root / plugin.module).mkdir(parents=True)
    (root / plugin.module / "__init__.py").write_text(
        textwrap.dedent(
            f'''
            """A third-party Comptroller plugin, as a user would write it."""

            from proxy.call.context import Refusal
            from proxy.hookspecs import hookimpl


            @hookimpl
            def pre_request_check(ctx):
                if ctx.end_user_id == {plugin.blocked_user!r}:
                    return Refusal(status=403, message={plugin.message!r})
                return None
            '''
        )
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{plugin.distribution}"
            version = "0.0.1"

            [project.entry-points.comptroller]
            {plugin.plugin_name} = "{plugin.module}"

            [tool.setuptools]
            packages = ["{plugin.module}"]
            """
        )
    )


# Every test here uses the pip-installed plugin (a pip subprocess).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    plugin = Installed(secrets.token_hex(4))
    root = tmp_path_factory.mktemp("throwaway")
    _write_distribution(root, plugin)
    try:
        _pip("install", "--no-deps", "--no-build-isolation", "--no-index", "--no-cache-dir",
             str(root))  # fmt: skip
        importlib.invalidate_caches()
        yield plugin
    finally:
        _pip("uninstall", "-y", plugin.distribution)
        sys.modules.pop(plugin.module, None)
        importlib.invalidate_caches()


def test_the_distribution_declares_its_entry_point(installed_plugin: Installed) -> None:
    names = {ep.name: ep.value for ep in entry_points(group="comptroller")}
    assert names[installed_plugin.plugin_name] == installed_plugin.module


def test_an_installed_plugin_is_loaded_and_can_refuse_a_call(
    installed_plugin: Installed, make_app: Callable[..., Flask], db_url: str
) -> None:
    app = make_app(base_config(db_url))
    pm = app.extensions["comptroller"].pm
    assert pm.has_plugin(installed_plugin.plugin_name)
    client = app.test_client()

    refused = client.post(
        "/chat/completions", json={**CHAT, "user": installed_plugin.blocked_user}, headers=MASTER
    )
    assert refused.status_code == 403
    assert refused.get_json()["error"] == {
        "message": installed_plugin.message,
        "type": "auth_error",
        "param": "None",
        "code": "403",
    }
    assert SpendLog.select().count() == 0

    allowed = client.post("/chat/completions", json={**CHAT, "user": "someone"}, headers=MASTER)
    assert allowed.status_code == 200


def test_an_installed_plugin_can_be_disabled_by_name(
    installed_plugin: Installed, make_app: Callable[..., Flask], db_url: str
) -> None:
    app = make_app(base_config(db_url, plugins={"disable": [installed_plugin.plugin_name]}))
    assert not app.extensions["comptroller"].pm.has_plugin(installed_plugin.plugin_name)
    body = {**CHAT, "user": installed_plugin.blocked_user}
    assert app.test_client().post("/chat/completions", json=body, headers=MASTER).status_code == 200


def test_gunicorn_loads_the_installed_plugin(installed_plugin: Installed, tmp_path: Path) -> None:
    import requests

    config = base_config(f"sqlite:///{tmp_path / 'ep.db'}")
    with ProxyServer(config, tmp_path, workers=1, threads=2) as server:
        body = {**CHAT, "user": installed_plugin.blocked_user}
        resp = requests.post(
            f"{server.url}/chat/completions", json=body, headers=MASTER, timeout=10
        )
        assert resp.status_code == 403
        assert resp.json()["error"]["message"] == installed_plugin.message
