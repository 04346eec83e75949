"""Token counts in ``spend_log`` as 64-bit integers: an upstream may report more than 2^31-1."""

SQLITE = ()  # SQLite's INTEGER is already 64-bit

POSTGRES = (
    "ALTER TABLE spend_log "
    "ALTER COLUMN prompt_tokens TYPE BIGINT, "
    "ALTER COLUMN completion_tokens TYPE BIGINT, "
    "ALTER COLUMN total_tokens TYPE BIGINT",
)
