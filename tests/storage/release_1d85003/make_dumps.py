"""How ``sqlite.sql`` and ``postgres.sql`` were made: a database written by release 1d85003.

Not run by the tests (they load the dumps). To remake them, from the repository root::

    git worktree add /tmp/release-1d85003 1d85003
    .venv/bin/python tests/storage/release_1d85003/make_dumps.py /tmp/release-1d85003

The release's own code (the worktree, first on ``sys.path``) builds a database
on SQLite and on PostgreSQL through its admin API and LLM routes (a budget
tier, a user, a key with limits, customers, strict-mode calls, a webhook
alert in the outbox), then each is dumped as SQL: ``sqlite3``'s ``iterdump``
and ``pg_dump --inserts``.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

# Run with the release's code: builds the database at argv[1] and prints nothing.
POPULATE = r"""
import os, sys
os.environ["WEBHOOK_URL"] = "http://127.0.0.1:9/unreachable"
from proxy.app import create_app
from proxy.config import build_config

config = {
    "model_list": [{
        "model_name": "mistral",
        "litellm_params": {
            "model": "mock/mistral-small",
            "input_cost_per_token": 0.000002,
            "output_cost_per_token": 0.000006,
        },
    }],
    "general_settings": {
        "master_key": "sk-1234",
        "database_url": sys.argv[1],
        "alerting": ["webhook"],
        "budget_enforcement": "strict",
    },
    "litellm_settings": {"max_budget": 100, "budget_duration": "30d"},
}
app = create_app(build_config(config))
client = app.test_client()
master = {"Authorization": "Bearer sk-1234"}

def ok(path, body):
    resp = client.post(path, json=body, headers=master)
    assert resp.status_code == 200, (path, resp.get_data(as_text=True))
    return resp.get_json()

ok("/budget/new", {"budget_id": "tier-1", "max_budget": 5, "budget_duration": "30d"})
ok("/user/new", {"user_id": "alice", "max_budget": 10, "budget_duration": "30d"})
ok("/key/generate", {
    "key": "sk-release-1d85003", "user_id": "alice", "key_alias": "alice-key",
    "max_budget": 1, "soft_budget": 0.5, "budget_duration": "7d", "rpm_limit": 100,
    "tpm_limit": 100000, "max_parallel_requests": 5, "models": ["mistral"],
    "metadata": {"team": "x"},
})
ok("/customer/new", {"user_id": "ishaan3", "budget_id": "tier-1"})
ok("/customer/new", {"user_id": "own-budget", "max_budget": 2, "budget_duration": "1d"})
key = {"Authorization": "Bearer sk-release-1d85003"}
for user in ("ishaan3", "own-budget"):
    resp = client.post("/chat/completions", headers=key, json={
        "model": "mistral", "user": user,
        "messages": [{"role": "user", "content": "what time is it"}],
    })
    assert resp.status_code == 200, resp.get_data(as_text=True)
os._exit(0)  # no webhook delivery attempt at exit: the alert stays in the outbox
"""


def _populate(release: Path, url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(release)}
    subprocess.run([sys.executable, "-c", POPULATE, url], cwd=release, env=env, check=True)


def _sqlite_dump(release: Path) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "release.db"
        _populate(release, f"sqlite:///{path}")
        conn = sqlite3.connect(path)
        try:
            return "\n".join(conn.iterdump()) + "\n"
        finally:
            conn.close()


def _postgres_dump(release: Path) -> str:
    sys.path.insert(0, str(REPO))
    from tests.support.databases import create_pg_database, drop_pg_database

    url = create_pg_database("comptroller_release_dump")
    try:
        _populate(release, url)
        out = subprocess.run(
            ["pg_dump", "--inserts", "--no-owner", "--no-privileges", "--no-comments", url],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    finally:
        drop_pg_database(url)
    # psql meta-commands (\restrict of newer pg_dump) are not SQL.
    return "".join(line for line in out.splitlines(keepends=True) if not line.startswith("\\"))


def main() -> None:
    release = Path(sys.argv[1]).resolve()
    (HERE / "sqlite.sql").write_text(_sqlite_dump(release), encoding="utf-8")
    (HERE / "postgres.sql").write_text(_postgres_dump(release), encoding="utf-8")


if __name__ == "__main__":
    main()
