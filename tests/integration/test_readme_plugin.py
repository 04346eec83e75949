"""The README's third-party plugins work as the README says.

The plugin modules and their pyprojects come from README.md's Plugins section,
as a reader would copy them (the first is the complete plugin, the second the
one with a table of its own that writes through ``defer_write``). They are
written as installed distributions (the module and a
``<name>-<version>.dist-info/`` folder with its entry point) into a
temporary directory that a gunicorn worker gets on its ``PYTHONPATH``; the
shared venv is never touched.
"""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from proxy.config import build_config
from proxy.plugins import make_plugin_manager
from proxy.storage.db import database, make_database
from tests.conftest import MASTER, base_config
from tests.support.distributions import forget_modules, pythonpath_with, write_distribution
from tests.support.proxy_server import ROOT, ProxyServer, wait_until
from tests.support.statements import spy_on_cursors, statement_sql

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the tests run on 3.11 in CI
    tomllib = pytest.importorskip("tomli")

FENCED = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


@dataclass
class ReadmePlugin:
    module_file: str
    module_source: str
    distribution: str
    version: str
    entry_points: dict[str, str]


def _plugins_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Plugins\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def _readme_plugins() -> list[ReadmePlugin]:
    blocks = FENCED.findall(_plugins_section())
    # The modules: the Python blocks whose first line names their file.
    modules = [
        (match.group(1), code)
        for lang, code in blocks
        if lang == "python" and (match := re.match(r"# (\w+\.py)\b", code))
    ]
    # Their pyprojects: the TOML blocks with a [project] table, in the same order.
    projects = [
        parsed["project"]
        for lang, code in blocks
        if lang == "toml" and "project" in (parsed := tomllib.loads(code))
        and "name" in parsed["project"]
    ]  # fmt: skip
    assert len(modules) == len(projects) == 2, "README: two plugin modules, each a pyproject"
    return [
        ReadmePlugin(
            module_file=module_file,
            module_source=module_source,
            distribution=project["name"],
            version=project["version"],
            entry_points=dict(project["entry-points"]["comptroller"]),
        )
        for (module_file, module_source), project in zip(modules, projects, strict=True)
    ]


def _install(plugin: ReadmePlugin, site: Path) -> ReadmePlugin:
    write_distribution(
        site,
        plugin.distribution,
        entry_points=plugin.entry_points,
        modules={plugin.module_file: plugin.module_source},
        version=plugin.version,
    )
    return plugin


@pytest.fixture
def readme_plugin(tmp_path: Path) -> ReadmePlugin:
    return _install(_readme_plugins()[0], tmp_path / "site")


@pytest.fixture
def usage_plugin(tmp_path: Path) -> ReadmePlugin:
    return _install(_readme_plugins()[1], tmp_path / "site")


def _chat(server: ProxyServer, content: str) -> requests.Response:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": content}]
    body: dict[str, Any] = {"model": "gpt-3.5-turbo", "messages": messages}
    return requests.post(f"{server.url}/chat/completions", json=body, headers=MASTER, timeout=10)


@pytest.mark.slow
def test_the_readme_plugin_refuses_passwords_and_prints_alerts(
    readme_plugin: ReadmePlugin, tmp_path: Path
) -> None:
    config = base_config(f"sqlite:///{tmp_path / 'readme.db'}")
    # The plugin prints alerts: unbuffered, each line reaches the log as it is printed.
    env = {**pythonpath_with(tmp_path / "site"), "PYTHONUNBUFFERED": "1"}
    with ProxyServer(config, tmp_path, workers=1, threads=2, env=env) as server:
        refused = _chat(server, "Here is my PassWord: hunter2")
        assert refused.status_code == 400, refused.text
        assert refused.json() == {
            "error": {
                "message": "Prompts may not contain passwords",
                "type": "invalid_request_error",
                "param": "None",
                "code": "400",
            }
        }
        allowed = _chat(server, "hello")
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["choices"][0]["message"]["content"]

        created = requests.post(
            f"{server.url}/key/generate", json={"key_alias": "readme"}, headers=MASTER, timeout=10
        )
        assert created.status_code == 200, created.text
        line = wait_until(lambda: _printed_alert(server.log_path.read_text()))
        assert "'event': 'key_created'" in line
        assert "'key_alias': 'readme'" in line


def _printed_alert(log: str) -> str | None:
    match = re.search(r"^comptroller alert: \{.*\}$", log, re.MULTILINE)
    return match.group(0) if match else None


def test_the_readme_plugin_can_be_disabled_by_its_entry_point_name(
    readme_plugin: ReadmePlugin,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    (name,) = readme_plugin.entry_points
    module = Path(readme_plugin.module_file).stem
    try:
        with caplog.at_level(logging.INFO, logger="comptroller.plugins"):
            assert make_plugin_manager(build_config(None)).has_plugin(name)
            pm = make_plugin_manager(build_config({"plugins": {"disable": [name]}}))
        assert not pm.has_plugin(name)
        assert "not an installed plugin" not in caplog.text
    finally:
        forget_modules(module)


@pytest.mark.slow
def test_the_readme_usage_plugin_counts_every_call_in_its_own_table(
    usage_plugin: ReadmePlugin, tmp_path: Path, pg_url: str
) -> None:
    config = base_config(pg_url)
    env = pythonpath_with(tmp_path / "site")
    with ProxyServer(config, tmp_path, workers=2, threads=2, env=env) as server:
        for n in range(6):
            assert _chat(server, f"hello {n}").status_code == 200
    db = make_database(pg_url)
    try:
        usage = db.execute_sql("SELECT model, calls, tokens FROM model_usage").fetchall()
        logged = db.execute_sql(
            "SELECT model_group, COUNT(*), SUM(total_tokens) FROM spend_log GROUP BY model_group"
        ).fetchall()
    finally:
        db.close_all()  # type: ignore[attr-defined]
    assert [(model, int(calls), int(tokens)) for model, calls, tokens in usage] == [
        (model, int(calls), int(tokens)) for model, calls, tokens in logged
    ]
    assert usage[0][1] == 6


def test_the_readme_usage_plugin_costs_no_round_trip(
    usage_plugin: ReadmePlugin,
    tmp_path: Path,
    db_url: str,
    make_app: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its write travels with the spend transaction's COMMIT: a call still costs
    the read, BEGIN with the ledger, and the COMMIT (tests/calls/test_call_round_trips.py)."""
    if not db_url.startswith("postgres"):
        pytest.skip("round trips are PostgreSQL's")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))  # found by its entry point
    module_name = Path(usage_plugin.module_file).stem
    try:
        plugins = {"disable": ["rate_limiter", "webhook_alerter"]}
        app = make_app(base_config(db_url, plugins=plugins))
        assert app.extensions["comptroller"].pm.has_plugin("model_usage")
        client = app.test_client()
        sent: list[str] = []
        monkeypatch.setattr(
            database.obj, "cursor", spy_on_cursors(database.obj.cursor, sent.append)
        )
        body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
        assert client.post("/chat/completions", json=body, headers=MASTER).status_code == 200
        sent.clear()
        assert client.post("/chat/completions", json=body, headers=MASTER).status_code == 200
        texts = [statement_sql(s) if not str(s).startswith("BEGIN") else str(s) for s in sent]
        assert len(sent) == 3, texts
        deferred, commit = str(sent[2]).rsplit("; ", 1)
        assert commit == "COMMIT" and "INTO model_usage" in statement_sql(deferred)
        with database.connection_context():
            calls = database.execute_sql("SELECT calls FROM model_usage").fetchone()[0]
        assert calls == 2
    finally:
        forget_modules(module_name)
