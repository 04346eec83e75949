"""The ``comptroller`` command and ``gunicorn 'wsgi:app'``, run as a user would run them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import ROOT, ProxyServer, free_port, wait_until
from tests.support.seeds import CUSTOMER_CURL_BODY

pytestmark = pytest.mark.slow

COMPTROLLER = str(Path(sys.executable).with_name("comptroller"))


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPTROLLER_", "LITELLM_"))}
    env.pop("DATABASE_URL", None)
    env.pop("PORT", None)
    env.update(extra)
    return env


@contextmanager
def comptroller(
    args: list[str], cwd: Path, port: int, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[str]]:
    """``comptroller <args>`` until /health/liveliness answers; stopped after (Ctrl-C).

    The wait is bounded, and the whole process group goes after it: a worker
    whose arbiter was killed would never exit by itself, and would keep its port
    and its database (``test_cli_server`` checks that Ctrl-C stops it promptly).
    """
    log = open(cwd / f"comptroller-{port}.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        [COMPTROLLER, *args, "--port", str(port)],
        cwd=cwd,
        env=env or clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )

    def alive() -> bool:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"comptroller exited:\n{log.read()}")
        url = f"http://127.0.0.1:{port}/health/liveliness"
        return requests.get(url, timeout=1).status_code == 200

    try:
        wait_until(alive, timeout=30)
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the arbiter took its workers with it
        log.close()


def output_of(cwd: Path, port: int) -> str:
    return (cwd / f"comptroller-{port}.log").read_text()


def seed_curl(host: str, port: int, key: str = "sk-1234") -> dict:
    """The seed's curl, run by curl itself (``requests`` when curl is not installed)."""
    url = f"http://{host}:{port}/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    if shutil.which("curl") is None:
        return requests.post(
            url, data=CUSTOMER_CURL_BODY.encode(), headers=headers, timeout=10
        ).json()
    out = subprocess.run(
        ["curl", "-sS", "-X", "POST", url, *[a for k, v in headers.items()
         for a in ("--header", f"{k}: {v}")], "--data", CUSTOMER_CURL_BODY],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def test_comptroller_with_a_config_serves_the_seed_curl(tmp_path: Path) -> None:
    config = {
        "general_settings": {
            "master_key": "sk-1234",
            "database_url": f"sqlite:///{tmp_path / 'cli.db'}",
        }
    }
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    with comptroller(["--config", "x.yaml"], tmp_path, port):
        # The seeds call http://0.0.0.0:4000 while the proxy listens on 127.0.0.1 only:
        # on Linux a connection to 0.0.0.0 goes to the loopback address.
        answer = seed_curl("0.0.0.0" if sys.platform == "linux" else "127.0.0.1", port)
        assert answer["object"] == "chat.completion", answer
        assert answer["model"] == "gpt-3.5-turbo"  # azure-gpt-3.5 is the mock gpt-3.5-turbo
        info = requests.get(
            f"http://127.0.0.1:{port}/global/spend",
            headers={"Authorization": "Bearer sk-1234"},
            timeout=5,
        ).json()
        assert info["spend"] > 0
    with sqlite3.connect(tmp_path / "cli.db") as db:
        rows = db.execute("SELECT end_user, model_group, status FROM spend_log").fetchall()
    assert rows == [("ishaan3", "azure-gpt-3.5", "success")]


def test_comptroller_with_no_config_at_all_starts_on_defaults(tmp_path: Path) -> None:
    port = free_port()
    with comptroller([], tmp_path, port):
        answer = seed_curl("127.0.0.1", port)
        assert answer["choices"][0]["message"]["content"]
    output = output_of(tmp_path, port)
    assert "trial key sk-1234" in output
    assert "listens on" not in output  # 127.0.0.1 is loopback: no second warning
    assert (tmp_path / "comptroller.db").exists()


def test_master_key_from_the_environment(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(COMPTROLLER_MASTER_KEY="sk-env-master-key")
    with comptroller([], tmp_path, port, env=env):
        assert "error" in seed_curl("127.0.0.1", port, key="sk-1234")
        assert seed_curl("127.0.0.1", port, key="sk-env-master-key")["object"] == "chat.completion"
    assert "trial key" not in output_of(tmp_path, port)


def test_trial_key_on_a_public_bind_warns(tmp_path: Path) -> None:
    port = free_port()
    with comptroller(["--host", "0.0.0.0"], tmp_path, port):
        pass
    assert "listens on 0.0.0.0" in output_of(tmp_path, port)


def test_a_bad_config_stops_start_up_with_the_key_path(tmp_path: Path) -> None:
    bad = {"model_list": [{"model_name": "a", "litellm_params": {"model": "openai/a",
                                                                 "timeout": "soon"}}]}  # fmt: skip
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    out = subprocess.run(
        [COMPTROLLER, "--config", "bad.yaml", "--port", str(free_port())],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "model_list[0].litellm_params.timeout" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_env_variable_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("general_settings:\n  master_key: os.environ/NO_SUCH_VAR\n")
    out = subprocess.run(
        [COMPTROLLER, "--config", "c.yaml"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "general_settings.master_key" in out.stderr and "NO_SUCH_VAR" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrate_applies_the_migrations_once(tmp_path: Path, backend: str) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}" if backend == "sqlite" else create_pg_database()
    try:
        (tmp_path / "m.yaml").write_text(
            yaml.safe_dump({"general_settings": {"database_url": url}})
        )

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [COMPTROLLER, "migrate", "--config", "m.yaml"],
                cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
            )  # fmt: skip

        first = run()
        assert first.returncode == 0, first.stderr
        assert "applied: m0001_core_tables" in first.stdout
        second = run()
        assert second.returncode == 0, second.stderr
        assert "nothing (up to date)" in second.stdout
        if backend == "sqlite":
            with sqlite3.connect(tmp_path / "m.db") as db:
                tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            assert {"spend_log", "key", "customer", "comptroller_migration"} <= tables
    finally:
        if backend == "postgres":
            drop_pg_database(url)


def test_gunicorn_wsgi_app_serves_the_seed_curl(tmp_path: Path) -> None:
    config = {
        "general_settings": {
            "master_key": "sk-1234",
            "database_url": f"sqlite:///{tmp_path / 'g.db'}",
        }
    }
    # ProxyServer runs `python -m gunicorn wsgi:app` in the checkout with COMPTROLLER_CONFIG.
    with ProxyServer(config, tmp_path, workers=2, threads=2) as server:
        answer = seed_curl("127.0.0.1", server.port)
        assert answer["object"] == "chat.completion"


def test_gunicorn_on_a_public_bind_with_the_trial_key_warns(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"general_settings": {"database_url": f"sqlite:///{tmp_path / 'w.db'}"}})
    )
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", "--bind", f"0.0.0.0:{port}",
             "--workers", "1"],
            cwd=ROOT, env=clean_env(COMPTROLLER_CONFIG=str(tmp_path / "c.yaml")),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/health/liveliness"
        wait_until(lambda: requests.get(url, timeout=1).status_code == 200, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
    output = log_path.read_text()
    assert "trial key sk-1234" in output
    assert "listens on 0.0.0.0" in output
