"""The ``deployment_health`` table: each deployment's failures this minute and its
cooldown, shared by every worker and host (the router's, proxy/storage/cooldowns.py)."""

# Frozen DDL of this migration's time (valid on SQLite and PostgreSQL).
STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS deployment_health ("
    " deployment_id VARCHAR(255) NOT NULL PRIMARY KEY,"
    " window_start DOUBLE PRECISION NOT NULL,"
    " fails INTEGER NOT NULL DEFAULT 0,"
    " cooldown_until DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " last_error VARCHAR(255),"
    " updated_at DOUBLE PRECISION NOT NULL)",
)
