"""Token counts in ``spend_log`` as 64-bit integers: an upstream may report more than 2^31-1."""

from peewee import Database

from proxy.storage.db import is_postgres


def apply(db: Database) -> None:
    if not is_postgres():
        return  # SQLite's INTEGER is already 64-bit
    db.execute_sql(
        "ALTER TABLE spend_log "
        "ALTER COLUMN prompt_tokens TYPE BIGINT, "
        "ALTER COLUMN completion_tokens TYPE BIGINT, "
        "ALTER COLUMN total_tokens TYPE BIGINT"
    )
