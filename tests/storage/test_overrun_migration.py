"""Migration m0007 adds ``spend_log.overrun`` (and its index) to a database made before it."""

from __future__ import annotations

import importlib

from proxy.app import create_app
from proxy.config import build_config
from proxy.storage.db import database
from proxy.storage.models import SpendLog
from tests.conftest import base_config

m0007 = importlib.import_module("migrations.m0007_spend_overrun")


def _columns() -> set[str]:
    return {column.name for column in database.get_columns("spend_log")}


def test_an_older_spend_log_gets_the_overrun_column(db_url) -> None:
    create_app(build_config(base_config(db_url)))  # migrates to the current schema
    with database.connection_context():
        try:
            database.execute_sql("DROP INDEX spend_log_overrun")
            database.execute_sql("ALTER TABLE spend_log DROP COLUMN overrun")
            assert "overrun" not in _columns()
            m0007.apply(database)
            assert "overrun" in _columns()
            m0007.apply(database)  # a second run changes nothing
            SpendLog.create(
                request_id="r1", call_type="chat", model="m", model_group="m",
                start_time=1.0, end_time=2.0, overrun=0.5,
            )  # fmt: skip
            assert SpendLog.get_by_id("r1").overrun == 0.5
            indexed = [i for i in database.get_indexes("spend_log") if i.columns == ["overrun"]]
            assert indexed
        finally:
            if "overrun" not in _columns():
                m0007.apply(database)
