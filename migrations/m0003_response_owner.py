"""The ``response_owner`` table: which key created which Responses API response id."""

# Frozen DDL of this migration's time (valid on SQLite and PostgreSQL).
STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS response_owner ("
    " response_id VARCHAR(255) NOT NULL PRIMARY KEY,"
    " key_hash VARCHAR(64) NOT NULL,"
    " model_group VARCHAR(255) NOT NULL,"
    " context_tokens BIGINT NOT NULL DEFAULT 0,"
    " created_at DOUBLE PRECISION NOT NULL)",
    "CREATE INDEX IF NOT EXISTS response_owner_key_hash ON response_owner (key_hash)",
)
