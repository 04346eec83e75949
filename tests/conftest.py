"""Shared fixtures: databases (SQLite and PostgreSQL), the app, the mock upstream.

Test tiers. Two markers sort every test (``pyproject.toml``):

- ``postgres``: needs the PostgreSQL server. Given automatically to the
  PostgreSQL half of every ``db_url`` test (any parameter whose value is
  ``"postgres"``) and to every test that takes a PostgreSQL fixture
  (``pg_database``, ``pg_url``, ``database_url``).
- ``slow``: starts a process (gunicorn, the CLI, a fork). Set by hand on the
  test or module (``pytestmark = pytest.mark.slow``).

``pytest -m "not postgres and not slow"`` is the fast tier: in-process, SQLite
only. A test that is not marked ``postgres`` and still connects to PostgreSQL,
or is not marked ``slow`` and still starts a process, fails with a message
saying which mark it lacks (``_TierGuard``), so the fast tier stays fast.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import psycopg2
import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.app import create_app
from proxy.config import build_config
from proxy.storage import clock as clock_module
from proxy.storage.clock import database_clock
from proxy.storage.db import database
from tests.support import app_builds
from tests.support.databases import (
    PG_ADMIN_URL,
    create_pg_database,
    drop_pg_database,
    postgres_available,
    truncate_pg_tables,
)
from tests.support.mock_openai import MockOpenAI
from tests.support.plugins import OutcomeRecorder

if TYPE_CHECKING:
    from tests.support.rate_limits import FrozenClock

MASTER_KEY = "sk-1234"
MASTER = {"Authorization": f"Bearer {MASTER_KEY}"}

# Fixtures that hand a test a PostgreSQL database: a test taking one is ``postgres``.
POSTGRES_FIXTURES = frozenset({"pg_database", "pg_url", "database_url"})
# The spend-journal folder this pytest process made (removed when it ends).
_JOURNALS_MADE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    """Spend journals of the session's proxies go to a folder of the session's own;
    app builds reuse what every build computes alike (tests/support/app_builds.py)."""
    app_builds.install()
    _steal_work_at_the_end(config)
    if not os.environ.get("COMPTROLLER_JOURNAL_DIR"):
        import tempfile

        folder = tempfile.mkdtemp(prefix="comptroller-journal-")
        os.environ["COMPTROLLER_JOURNAL_DIR"] = folder
        config.stash[_JOURNALS_MADE] = folder


def pytest_unconfigure(config: pytest.Config) -> None:
    """The session's journal folder goes with it (xdist workers inherit the folder
    from the process that made it, and that process removes it, after them)."""
    folder = config.stash.get(_JOURNALS_MADE, None)
    if folder is not None:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        os.environ.pop("COMPTROLLER_JOURNAL_DIR", None)


def _steal_work_at_the_end(config: pytest.Config) -> None:
    """``-n N`` without ``--dist``: xdist's ``worksteal``, not its ``load``.

    The tests take from a millisecond to several seconds (an upstream timing out
    three times): with ``load`` the tests queued on one worker stay there, and
    the fast tier ended with one worker idle for 10 s while the other ran the
    three slow-upstream tests. ``worksteal`` hands them to whichever worker is
    free. An explicit ``--dist`` is left as given."""
    if getattr(config.option, "dist", "no") != "load":
        return
    args = config.invocation_params.args
    if any(str(a) in ("-d", "--dist") or str(a).startswith("--dist=") for a in args):
        return
    config.option.dist = "worksteal"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``postgres`` every test that takes a PostgreSQL database."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        # The PostgreSQL case of a backend parameter (db_url's, or a test's own "backend").
        params = callspec.params.values() if callspec is not None else ()
        on_postgres = any(isinstance(v, str) and v == "postgres" for v in params)
        if on_postgres or POSTGRES_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


PG_SERVER_PORT = urlsplit(PG_ADMIN_URL).port or 5432


def _dsn_port(args: tuple[Any, ...]) -> int:
    dsn = args[0] if args and isinstance(args[0], str) else ""
    if "://" in dsn:
        return urlsplit(dsn).port or 5432
    found = re.search(r"\bport=(\d+)", dsn)
    return int(found.group(1)) if found else 5432


class _TierGuard:
    """Fails a test that does what its marks say it does not: a test without
    ``postgres`` that connects to PostgreSQL, a test without ``slow`` that starts a
    process. Armed during the test's setup and call (not teardown, where a
    session fixture of an earlier test may be torn down)."""

    def __init__(self, item: pytest.Item) -> None:
        self.may_postgres = item.get_closest_marker("postgres") is not None
        self.may_spawn = item.get_closest_marker("slow") is not None
        self.patch = pytest.MonkeyPatch()

    def arm(self) -> None:
        if not self.may_postgres:
            refuse_server = self._refuse("postgres", "connects to the PostgreSQL server")
            connect = psycopg2.connect

            def guarded_connect(*args: Any, **kwargs: Any) -> Any:
                # A server nobody listens on (a readiness test's dead database) is no server.
                if int(kwargs.get("port") or _dsn_port(args)) == PG_SERVER_PORT:
                    refuse_server()
                return connect(*args, **kwargs)

            self.patch.setattr(psycopg2, "connect", guarded_connect)
        if not self.may_spawn:
            refuse = self._refuse("slow", "starts a process")
            self.patch.setattr(subprocess.Popen, "__init__", refuse)
            self.patch.setattr(os, "fork", refuse)

    def disarm(self) -> None:
        self.patch.undo()

    @staticmethod
    def _refuse(mark: str, what: str) -> Callable[..., Any]:
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise AssertionError(
                f"this test {what} but is not marked {mark!r}: add "
                f"@pytest.mark.{mark} (the fast tier runs -m 'not postgres and not slow')"
            )

        return refuse


def _guarded(item: pytest.Item) -> Generator[None, None, None]:
    guard = _TierGuard(item)
    guard.arm()
    try:
        yield
    finally:
        guard.disarm()


pytest_runtest_setup = pytest.hookimpl(hookwrapper=True)(_guarded)
pytest_runtest_call = pytest.hookimpl(hookwrapper=True)(_guarded)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the session, random name, dropped after."""
    if not postgres_available():
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (see .ci/run)")
    url = create_pg_database()
    yield url
    drop_pg_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each storage test runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        with _memory_backed_dir(tmp_path) as folder:
            yield f"sqlite:///{folder / 'comptroller.db'}"
            _close_database()
        return
    url = request.getfixturevalue("pg_database")
    truncate_pg_tables(url)
    yield url
    _close_database()


@contextmanager
def _memory_backed_dir(fallback: Path) -> Iterator[Path]:
    """A folder in /dev/shm (tmpfs) where there is one, else ``fallback``: a SQLite
    file there costs no disk flush on checkpoint and close (a third of a fast-tier
    test's time on a busy disk). Removed after the test."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield fallback
        return
    folder = Path(tempfile.mkdtemp(prefix="comptroller-test-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _close_database() -> None:
    obj = database.obj
    if obj is None:
        return
    if not obj.is_closed():
        obj.close()
    close_all = getattr(obj, "close_all", None)
    if close_all is not None:
        close_all()


@pytest.fixture(scope="session")
def mock_openai() -> Iterator[MockOpenAI]:
    server = MockOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(mock_openai: MockOpenAI) -> MockOpenAI:
    """The mock OpenAI server, with its records and behaviour reset.

    A call of an earlier test may still be in the mock (a handler finishes just
    after its client read the answer; a stalled stream sleeps out its chunk
    delay): it would count in ``in_flight``, ``max_in_flight`` and
    ``aborted_streams`` of this test. The reset wakes hanging calls; the fixture
    waits for every call to end, then starts the counters from zero."""
    mock_openai.reset()
    mock_openai.wait_in_flight(0, timeout=15)
    mock_openai.reset()
    return mock_openai


def openai_model(name: str, base_url: str, **params: Any) -> dict[str, Any]:
    """A ``model_list`` entry pointing at an OpenAI-compatible upstream."""
    return {
        "model_name": name,
        "litellm_params": {
            "model": f"openai/{name}",
            "api_base": base_url,
            "api_key": "sk-up",
            **params,
        },
    }


def base_config(db_url: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "general_settings": {"master_key": MASTER_KEY, "database_url": db_url},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config


@pytest.fixture
def make_app(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Flask]:
    """Build an app on this test's database: ``make_app(config_dict, plugins=[...])``."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("COMPTROLLER_MASTER_KEY", raising=False)
    monkeypatch.delenv("LITELLM_MASTER_KEY", raising=False)

    def factory(
        config: dict[str, Any] | None = None, plugins: list[tuple[str, Any]] | None = None
    ) -> Flask:
        raw = copy.deepcopy(config) if config is not None else base_config(db_url)
        raw.setdefault("general_settings", {}).setdefault("database_url", db_url)
        raw["general_settings"].setdefault("master_key", MASTER_KEY)
        app = create_app(build_config(raw), extra_plugins=plugins)
        app.testing = True
        return app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def recorder() -> OutcomeRecorder:
    """Records call outcomes: ``make_app(config, plugins=[("recorder", recorder)])``."""
    return OutcomeRecorder()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """The database's clock (proxy.storage.clock), frozen at the current time:
    ``clock.advance(59)``."""
    from tests.support.rate_limits import FrozenClock  # it imports this module

    frozen = FrozenClock(time.time())
    monkeypatch.setattr(database_clock, "now", frozen.time)
    # What the call's one read hands plugins' fragments as ``now`` (proxy.storage.lookup).
    monkeypatch.setattr(clock_module, "fresh_now", frozen.time)
    return frozen
