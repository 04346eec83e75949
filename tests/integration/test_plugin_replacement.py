"""A third-party plugin replaces a builtin by taking its name (SPEC section 10).

The replacement is a real distribution found by entry-point discovery: its
package and its ``<name>-0.1.dist-info/`` folder are written to a temporary
directory that is put on ``sys.path`` (or on a gunicorn worker's
``PYTHONPATH``), so the shared venv is never touched. It declares an entry
point named ``rate_limiter`` in the ``comptroller`` group; it refuses one end
user with its own 429 and applies no other limit.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from flask import Flask

from proxy.config import build_config
from proxy.plugins import make_plugin_manager
from proxy.storage.models import SpendLog
from tests.conftest import MASTER, base_config
from tests.support.admin_api import post_ok
from tests.support.assertions import assert_error
from tests.support.distributions import forget_modules, pythonpath_with, write_distribution
from tests.support.proxy_server import ROOT, ProxyServer, free_port
from tests.support.rate_limits import chat

REPLACE_RATE_LIMITER = {"disable": ["rate_limiter"]}


@dataclass
class Replacement:
    root: Path
    distribution: str
    module: str
    blocked_user: str
    message: str

    def startup_error(self) -> str:
        return (
            f"plugin 'rate_limiter' from {self.distribution} is named like the builtin "
            "rate_limiter plugin, which is enabled: add rate_limiter to plugins.disable in the "
            "config (plugins: {disable: [rate_limiter]}) to let it replace the builtin, "
            f"or uninstall {self.distribution} to keep the builtin"
        )


def _write_replacement(root: Path) -> Replacement:
    tag = secrets.token_hex(4)
    plugin = Replacement(
        root=root,
        distribution=f"comptroller-own-limiter-{tag}",
        module=f"comptroller_own_limiter_{tag}",
        blocked_user=f"throttled-{tag}",
        message=f"refused by the own rate limiter {tag}",
    )
    source = textwrap.dedent(
        f'''
        """A rate limiter of its own, in place of Comptroller's builtin."""

        from proxy.call.context import Refusal
        from proxy.hookspecs import hookimpl


        @hookimpl
        def pre_request_check(ctx):
            if ctx.end_user_id == {plugin.blocked_user!r}:
                return Refusal(status=429, message={plugin.message!r}, type="rate_limit_error")
            return None
        '''
    )
    write_distribution(
        root,
        plugin.distribution,
        entry_points={"rate_limiter": plugin.module},
        modules={f"{plugin.module}/__init__.py": source},
    )
    return plugin


@pytest.fixture
def replacement(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Replacement]:
    """The replacement, discoverable by this process's ``importlib.metadata``."""
    plugin = _write_replacement(tmp_path / "site")
    monkeypatch.syspath_prepend(str(plugin.root))
    yield plugin
    forget_modules(plugin.module)


def test_a_replacement_of_a_disabled_builtin_is_loaded_and_used(
    replacement: Replacement,
    make_app: Callable[..., Flask],
    db_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="comptroller.plugins"):
        app = make_app(base_config(db_url, plugins=REPLACE_RATE_LIMITER))
    assert (
        f"plugin rate_limiter from {replacement.distribution} replaces the builtin" in caplog.text
    )
    assert "not an installed plugin" not in caplog.text
    client = app.test_client()
    key = post_ok(client, "/key/generate", {"rpm_limit": 1})["key"]

    # The builtin would refuse the second call of this minute: it no longer applies.
    for _ in range(3):
        resp = chat(client, key, user="someone")
        assert resp.status_code == 200, resp.get_data(as_text=True)
    refused = chat(client, key, user=replacement.blocked_user)
    error = assert_error(refused, 429, err_type="rate_limit_error")
    assert error["message"] == replacement.message
    assert SpendLog.select().count() == 3


def test_a_replacement_checks_in_the_builtins_turn_after_the_budgets(
    replacement: Replacement, make_app: Callable[..., Flask], db_url: str
) -> None:
    app = make_app(base_config(db_url, plugins=REPLACE_RATE_LIMITER))
    client = app.test_client()
    key = post_ok(client, "/key/generate", {"max_budget": 0})["key"]
    # Budgets are checked before the rate limiter (SPEC section 6), so before its replacement.
    error = assert_error(chat(client, key, user=replacement.blocked_user), 401)
    assert "ExceededTokenBudget" in error["message"]


def test_an_entry_point_named_like_an_enabled_builtin_stops_start_up(
    replacement: Replacement,
) -> None:
    with pytest.raises(RuntimeError) as err:
        make_plugin_manager(build_config({"general_settings": {"master_key": "sk-x"}}))
    assert str(err.value) == replacement.startup_error()


def test_a_disabled_entry_point_that_replaces_nothing_stays_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tag = secrets.token_hex(4)
    module = f"comptroller_extra_{tag}"
    write_distribution(
        tmp_path,
        f"comptroller-extra-{tag}",
        entry_points={f"extra_{tag}": module},
        modules={f"{module}.py": "raise ImportError('a disabled plugin is never imported')\n"},
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = build_config({"plugins": {"disable": [f"extra_{tag}", "rate_limitr"]}})
    with caplog.at_level(logging.WARNING, logger="comptroller.plugins"):
        pm = make_plugin_manager(config)
    assert not pm.has_plugin(f"extra_{tag}")
    assert pm.has_plugin("rate_limiter")
    assert "'rate_limitr', which is not an installed plugin" in caplog.text
    assert f"extra_{tag}" not in caplog.text


@pytest.mark.slow
def test_the_command_line_refuses_to_start_and_says_what_to_do(tmp_path: Path) -> None:
    plugin = _write_replacement(tmp_path / "site")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(base_config(f"sqlite:///{tmp_path / 'cli.db'}")))
    env = {**os.environ, **pythonpath_with(plugin.root)}
    env.pop("DATABASE_URL", None)
    command = ["--config", str(config_path), "--port", str(free_port())]
    done = subprocess.run(
        [sys.executable, "-m", "proxy.cli", *command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"comptroller: cannot start: {plugin.startup_error()}" in done.stderr


@pytest.mark.slow
def test_gunicorn_workers_use_the_replacement(tmp_path: Path) -> None:
    plugin = _write_replacement(tmp_path / "site")
    config = base_config(f"sqlite:///{tmp_path / 'gunicorn.db'}", plugins=REPLACE_RATE_LIMITER)
    env = pythonpath_with(plugin.root)
    with ProxyServer(config, tmp_path, workers=1, threads=2, env=env) as server:
        key = requests.post(
            f"{server.url}/key/generate", json={"rpm_limit": 1}, headers=MASTER, timeout=10
        ).json()["key"]

        def call(user: str) -> requests.Response:
            body = {
                "model": "gpt-3.5-turbo",
                "messages": [{"role": "user", "content": "hello"}],
                "user": user,
            }
            headers = {"Authorization": f"Bearer {key}"}
            url = f"{server.url}/chat/completions"
            return requests.post(url, json=body, headers=headers, timeout=10)

        assert [call("someone").status_code for _ in range(3)] == [200, 200, 200]
        refused = call(plugin.blocked_user)
        assert refused.status_code == 429
        assert refused.json()["error"]["message"] == plugin.message
    log = server.log_path.read_text()
    assert f"plugin rate_limiter from {plugin.distribution} replaces the builtin" in log
