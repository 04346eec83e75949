"""``comptroller serve`` started while its database is down waits for it instead of exiting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from tests.e2e.test_cli import clean_env, comptroller, output_of
from tests.faults.outage import DatabaseCutOff
from tests.support.databases import create_pg_database, drop_pg_database
from tests.support.proxy_server import free_port, wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def fault_db() -> Iterator[str]:
    url = create_pg_database("comptroller_cli_faults")
    try:
        yield url
    finally:
        DatabaseCutOff(url).restore()
        drop_pg_database(url)


def test_comptroller_serve_with_the_database_down_waits_and_serves_when_it_is_back(
    fault_db: str, tmp_path: Path
) -> None:
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"general_settings": {"database_url": fault_db}})
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    outage = DatabaseCutOff(fault_db)
    try:
        outage.cut()
        env = clean_env(COMPTROLLER_JOURNAL_DIR=str(tmp_path / "journal"))
        with comptroller(["--config", "c.yaml", "--workers", "2"], tmp_path, port, env) as proc:
            ready = requests.get(f"{url}/health/readiness", timeout=10)
            assert ready.status_code == 503
            assert "waiting for the database" in ready.json()["error"]["message"]
            outage.restore()
            wait_until(
                lambda: requests.get(f"{url}/health/readiness", timeout=5).status_code == 200,
                timeout=30,
            )
            wait_until(
                lambda: (
                    requests.post(
                        f"{url}/key/generate", json={}, headers={"Authorization": "Bearer sk-1234"}
                    ).status_code
                    == 200
                ),
                timeout=30,
            )
            assert proc.poll() is None  # the arbiter never exited
        assert "the workers wait for it" in output_of(tmp_path, port)
    finally:
        outage.restore()
