"""The README's complete third-party plugin works as the README says.

The plugin module and its pyproject come from README.md's Plugins section,
as a reader would copy them. They are written as an installed distribution
(the module and a ``<name>-<version>.dist-info/`` folder with its entry
point) into a temporary directory that a gunicorn worker gets on its
``PYTHONPATH``; the shared venv is never touched.
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
from tests.conftest import MASTER, base_config
from tests.support.distributions import forget_modules, pythonpath_with, write_distribution
from tests.support.proxy_server import ROOT, ProxyServer, wait_until

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


def _readme_plugin() -> ReadmePlugin:
    blocks = FENCED.findall(_plugins_section())
    # The module: the Python block whose first line names its file.
    modules = [
        (match.group(1), code)
        for lang, code in blocks
        if lang == "python" and (match := re.match(r"# (\w+\.py)\b", code))
    ]
    # Its pyproject: the TOML block with a [project] table.
    projects = [
        parsed["project"]
        for lang, code in blocks
        if lang == "toml" and "project" in (parsed := tomllib.loads(code))
        and "name" in parsed["project"]
    ]  # fmt: skip
    assert len(modules) == 1 and len(projects) == 1, "README: one plugin module, one pyproject"
    (module_file, module_source), project = modules[0], projects[0]
    return ReadmePlugin(
        module_file=module_file,
        module_source=module_source,
        distribution=project["name"],
        version=project["version"],
        entry_points=dict(project["entry-points"]["comptroller"]),
    )


@pytest.fixture
def readme_plugin(tmp_path: Path) -> ReadmePlugin:
    plugin = _readme_plugin()
    write_distribution(
        tmp_path / "site",
        plugin.distribution,
        entry_points=plugin.entry_points,
        modules={plugin.module_file: plugin.module_source},
        version=plugin.version,
    )
    return plugin


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
