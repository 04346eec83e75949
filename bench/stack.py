"""What the benchmark runs against: mock upstream, webhook receiver, PostgreSQL, gunicorn.

Comptroller runs as production does (``gunicorn wsgi:app``, gthread) on a
fresh PostgreSQL database, with every builtin plugin on and something for
each to do on every call:

* proxy budget (``litellm_settings.max_budget`` with a ``budget_duration``);
* key budget and soft budget, user budget, each with a ``budget_duration``;
* end users (a ``user`` on every call, cycling through ``END_USERS`` ids):
  half have their own budget row, half follow the default budget
  (``max_end_user_budget_id``);
* rate limits (rpm, tpm, parallel requests) on the key, the user and both
  kinds of end-user budget, far too high ever to refuse;
* webhook alerts on, posting to the local receiver (``spend_tracked`` on
  every call, as every call names an end user).

Budgets have room for far more than any run spends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg2
import requests
import yaml

from bench import procstats
from tests.support.databases import create_pg_database, drop_pg_database

ROOT = Path(__file__).resolve().parents[1]
MASTER_KEY = "sk-bench-master-key"
UPSTREAM_KEY = "sk-bench-upstream"
MODEL = "bench-model"
DEFAULT_TIER = "bench-default-tier"
END_USERS = [f"bench-end-user-{i:03d}" for i in range(100)]
HIGH_RPM = 1_000_000_000
HIGH_TPM = 1_000_000_000_000
HIGH_PARALLEL = 1_000_000
ROOMY_BUDGET = 1e9
PROMPT = "Say hello to the benchmark, in one short sentence please."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:g}s")


def chat_body(end_user: str, stream: bool, model: str = MODEL) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "user": end_user,
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def gunicorn_command(
    app: str, port: int, workers: int, threads: int, prefix: list[str] | None = None
) -> list[str]:
    """gunicorn serving ``app`` on 127.0.0.1:``port`` with the benchmark's settings
    (``bench/gunicorn_bench.py``), run under ``prefix`` (``valgrind ...``) if given."""
    return [
        *(prefix or []),
        sys.executable, "-m", "gunicorn", app,
        "-c", str(ROOT / "bench" / "gunicorn_bench.py"),
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(workers),
        "--threads", str(threads),
    ]  # fmt: skip


class Stack:
    """Starts and stops everything; knows the URLs, the key and the processes."""

    def __init__(
        self,
        workdir: Path,
        workers: int = 2,
        threads: int = 16,
        disable: list[str] | None = None,
        synchronous_commit: bool = True,
        app_root: Path = ROOT,
        gunicorn_prefix: list[str] | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """``app_root``: the checkout gunicorn serves (``wsgi:app`` from there);
        ``gunicorn_prefix``: a command gunicorn runs under (``valgrind ...``), which
        may slow its start: ``start_timeout`` is how long it gets."""
        self.workdir = workdir
        self.app_root = app_root
        self.gunicorn_prefix = list(gunicorn_prefix or [])
        self.start_timeout = start_timeout
        self.disable = list(disable or [])
        self.synchronous_commit = synchronous_commit
        self.workers = workers
        self.threads = threads
        self.upstream_port = free_port()
        self.receiver_port = free_port()
        self.proxy_port = free_port()
        self.upstream_url = f"http://127.0.0.1:{self.upstream_port}"
        self.receiver_url = f"http://127.0.0.1:{self.receiver_port}"
        self.proxy_url = f"http://127.0.0.1:{self.proxy_port}"
        self.db_url = ""
        self.virtual_key = ""
        self._servers: subprocess.Popen[bytes] | None = None
        self._gunicorn: subprocess.Popen[bytes] | None = None
        self._logs: list[Any] = []

    # --- life cycle ---------------------------------------------------------

    def start(self) -> Stack:
        try:
            self._start_servers()
            self.db_url = create_pg_database("comptroller_bench")
            self._start_gunicorn()
            self._create_entities()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for proc in (self._gunicorn, self._servers):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._gunicorn = self._servers = None
        for log in self._logs:
            log.close()
        self._logs = []
        if self.db_url:
            drop_pg_database(self.db_url)
            self.db_url = ""

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _log(self, name: str) -> Any:
        handle = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115  (closed in stop)
        self._logs.append(handle)
        return handle

    def _start_servers(self) -> None:
        cmd = [
            sys.executable, "-m", "bench.servers",
            "--upstream-port", str(self.upstream_port),
            "--receiver-port", str(self.receiver_port),
        ]  # fmt: skip
        log = self._log("servers")
        self._servers = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        wait_for(
            lambda: requests.get(f"{self.upstream_url}/_ready", timeout=1).ok, 15, "mock upstream"
        )

    def config(self) -> dict[str, Any]:
        return {
            "model_list": [
                {
                    "model_name": MODEL,
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": f"{self.upstream_url}/v1",
                        "api_key": UPSTREAM_KEY,
                        "input_cost_per_token": 1.5e-7,
                        "output_cost_per_token": 6e-7,
                        "timeout": 30,
                    },
                }
            ],
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": self.db_url
                + ("" if self.synchronous_commit else "?options=-c%20synchronous_commit%3Doff"),
                "alerting": ["webhook"],
            },
            "litellm_settings": {
                "max_budget": ROOMY_BUDGET,
                "budget_duration": "30d",
                "max_end_user_budget_id": DEFAULT_TIER,
            },
            "plugins": {"disable": self.disable},
        }

    def _start_gunicorn(self) -> None:
        config_path = self.workdir / "config.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        env = {**os.environ, "COMPTROLLER_CONFIG": str(config_path)}
        env.pop("DATABASE_URL", None)
        env["WEBHOOK_URL"] = f"{self.receiver_url}/hook"
        paths = [str(self.app_root), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path)
        cmd = gunicorn_command(
            "wsgi:app", self.proxy_port, self.workers, self.threads, self.gunicorn_prefix
        )
        log = self._log("gunicorn")
        self._gunicorn = subprocess.Popen(
            cmd, cwd=self.app_root, env=env, stdout=log, stderr=subprocess.STDOUT
        )

        def ready() -> bool:
            if self._gunicorn is not None and self._gunicorn.poll() is not None:
                tail = (self.workdir / "gunicorn.log").read_text()[-3000:]
                raise RuntimeError(f"gunicorn exited:\n{tail}")
            up = requests.get(f"{self.proxy_url}/health/readiness", timeout=2).ok
            return up and len(self.worker_pids()) == self.workers

        wait_for(ready, self.start_timeout, "gunicorn")

    def _admin(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        resp = requests.post(
            f"{self.proxy_url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {MASTER_KEY}"},
            timeout=30,
        )
        if not resp.ok:
            raise RuntimeError(f"{path} answered {resp.status_code}: {resp.text}")
        answer: dict[str, Any] = resp.json()
        return answer

    def _create_entities(self) -> None:
        limits = {
            "rpm_limit": HIGH_RPM,
            "tpm_limit": HIGH_TPM,
            "max_parallel_requests": HIGH_PARALLEL,
            "budget_duration": "30d",
        }
        default_tier = {"budget_id": DEFAULT_TIER, "max_budget": ROOMY_BUDGET, **limits}
        self._admin("/budget/new", default_tier)
        self._admin("/user/new", {"user_id": "bench-user", "max_budget": ROOMY_BUDGET, **limits})
        key = self._admin(
            "/key/generate",
            {
                "user_id": "bench-user",
                "key_alias": "bench-key",
                "max_budget": ROOMY_BUDGET,
                "soft_budget": ROOMY_BUDGET / 2,
                **limits,
            },
        )
        self.virtual_key = key["key"]
        for end_user in END_USERS[::2]:  # the other half follow the default budget
            self._admin("/customer/new", {"user_id": end_user, "max_budget": 1e6, **limits})

    # --- what the benchmark reads ---------------------------------------------

    @property
    def arbiter_pid(self) -> int:
        assert self._gunicorn is not None
        return self._gunicorn.pid

    def worker_pids(self) -> list[int]:
        return procstats.children(self.arbiter_pid)

    def proxy_pids(self) -> list[int]:
        return [self.arbiter_pid, *self.worker_pids()]

    def proxy_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {self.virtual_key}"}

    def upstream_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {UPSTREAM_KEY}"}

    def statements(self) -> dict[str, int]:
        """Statements sent to PostgreSQL so far by all workers (gunicorn_bench.py)."""
        answer: dict[str, int] = requests.get(f"{self.proxy_url}/_bench/stats", timeout=5).json()
        return answer

    def webhooks_received(self) -> int:
        return int(requests.get(f"{self.receiver_url}/_count", timeout=5).json()["posts"])

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = psycopg2.connect(self.db_url)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows: list[tuple[Any, ...]] = cur.fetchall()
                return rows
        finally:
            conn.close()

    def postgres_pids(self) -> list[int]:
        """The server processes serving the benchmark's database (pooled: they persist)."""
        name = self.db_url.rsplit("/", 1)[1]
        rows = self._query(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        return [int(row[0]) for row in rows]

    def outbox(self) -> tuple[int, int]:
        """(alerts queued, alerts delivered) in the webhook outbox."""
        rows = self._query("SELECT COUNT(*), COUNT(sent_at) FROM webhook_outbox")
        return int(rows[0][0]), int(rows[0][1])

    def spend_check(self) -> tuple[float, float, int]:
        """(proxy counter, sum of spend logs, spend-log rows): equal when spend is exact."""
        counter = self._query("SELECT SUM(spend) FROM proxy_spend")[0][0]
        total, rows = self._query("SELECT COALESCE(SUM(spend), 0), COUNT(*) FROM spend_log")[0]
        return float(counter), float(total), int(rows)
