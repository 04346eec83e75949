"""``comptroller`` serves through gunicorn: several workers, migrations once, exact spend."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg2
import pytest
import requests
import yaml

from tests.e2e.test_cli import COMPTROLLER, clean_env, comptroller, output_of
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import free_port

pytestmark = pytest.mark.slow

CALLS = 40


def _call(port: int, n: int) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{port}/chat/completions",
        json={
            "model": "gpt-3.5-turbo",
            "user": "cli-customer",
            "messages": [{"role": "user", "content": f"call {n}"}],
        },
        headers={"Authorization": "Bearer sk-1234"},
        timeout=30,
    )


def _spend_rows(url: str, tmp_path: Path) -> tuple[int, float, float]:
    """(spend-log rows, their sum, the customer's counter)."""
    queries = (
        "SELECT COUNT(*), SUM(spend) FROM spend_log",
        # Its row's base plus its stripes (proxy.storage.stripes; none on SQLite).
        "SELECT spend + (SELECT COALESCE(SUM(s.spend), 0) FROM spend_stripe s "
        "WHERE s.kind = 'customer' AND s.entity_id = user_id) "
        "FROM customer WHERE user_id = 'cli-customer'",
    )
    if url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "s.db") as db:
            (count, total), (counter,) = (db.execute(q).fetchone() for q in queries)
        return count, total, counter
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(queries[0])
            count, total = cur.fetchone()
            cur.execute(queries[1])
            (counter,) = cur.fetchone()
        return count, total, counter
    finally:
        conn.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_comptroller_runs_gunicorn_workers_and_meters_every_call(
    tmp_path: Path, backend: str
) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else create_pg_database()
    try:
        (tmp_path / "c.yaml").write_text(
            yaml.safe_dump({"general_settings": {"database_url": url}})
        )
        port = free_port()
        args = ["--config", "c.yaml", "--workers", "2", "--threads", "4"]
        with comptroller(args, tmp_path, port):
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(lambda n: _call(port, n), range(CALLS)))
        assert [a.status_code for a in answers] == [200] * CALLS
        count, total, counter = _spend_rows(url, tmp_path)
        assert count == CALLS
        assert counter == pytest.approx(total, rel=1e-12) and total > 0
        output = output_of(tmp_path, port)
        assert output.count("Booting worker with pid") == 2
        assert "Using worker: proxy.serving.GthreadWorker" in output
        assert "2 workers x 4 threads" in output
        # Applied once, by the arbiter, before any worker started.
        assert output.count("migration m0001_core_tables applied") == 1
        assert output.index("migration m0001_core_tables applied") < output.index("Booting worker")
    finally:
        if backend == "postgres":
            drop_pg_database(url)


def test_num_workers_alias_as_litellm_spells_it(tmp_path: Path) -> None:
    port = free_port()
    with comptroller(["--num_workers", "3", "--threads", "2"], tmp_path, port):
        assert _call(port, 0).status_code == 200
    assert output_of(tmp_path, port).count("Booting worker with pid") == 3


def test_a_config_file_as_the_argument_is_served(tmp_path: Path) -> None:
    """``comptroller /path/to/config.yaml``, as the budget seed starts its proxy."""
    (tmp_path / "config.yaml").write_text(
        yaml.safe_dump(
            {
                "general_settings": {
                    "master_key": "sk-from-the-file",
                    "database_url": f"sqlite:///{tmp_path / 'p.db'}",
                }
            }
        )
    )
    port = free_port()
    with comptroller([str(tmp_path / "config.yaml"), "--workers", "1"], tmp_path, port):
        url = f"http://127.0.0.1:{port}/v1/models"
        assert requests.get(url, headers={"Authorization": "Bearer sk-1234"}).status_code == 401
        answer = requests.get(url, headers={"Authorization": "Bearer sk-from-the-file"})
        assert answer.status_code == 200
        assert "gpt-3.5-turbo" in {model["id"] for model in answer.json()["data"]}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "unknown command 'nosuch': use serve, migrate or a config file"),
        (["c.yaml", "--config", "c.yaml"], "give the config file once"),
        (["missing.yaml"], "config file missing.yaml does not exist"),
        (["--workers", "0"], "--workers and --threads must be at least 1"),
    ],
)
def test_a_wrong_argument_is_refused_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "c.yaml").write_text("general_settings: {}\n")
    out = subprocess.run(
        [COMPTROLLER, *args, "--port", str(free_port())],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_ctrl_c_stops_every_worker_promptly_under_load(tmp_path: Path) -> None:
    """SIGINT while calls arrive: gunicorn's stock gthread worker could deadlock in
    its signal handler (shutting its pool down under the lock ``submit`` held) and
    be killed only after the 15 s graceful timeout."""
    port = free_port()
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                _call(port, 0)  # a new connection each time: a submit() per call
            except requests.RequestException:
                pass

    with comptroller(["--workers", "2", "--threads", "4"], tmp_path, port) as proc:
        clients = [threading.Thread(target=hammer) for _ in range(6)]
        for client in clients:
            client.start()
        try:
            time.sleep(1.0)  # calls in full flow when the signal lands
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
            took = time.monotonic() - started
        finally:
            stop.set()
            for client in clients:
                client.join()
    assert took < 8, f"Ctrl-C took {took:.1f} s"
    assert "Shutting down: Master" in output_of(tmp_path, port)
