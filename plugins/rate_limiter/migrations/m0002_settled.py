"""The ``rate_limit_settled`` table: what finished calls give back, until a check folds it in.

A settle used to add its tokens to (and free its slot on) the scope's window
row, holding that row's lock until its COMMIT: every settle of a busy key
queued behind the key's checks and its other settles. Now a settle inserts
one row per scope here, which no other settle touches, and the next check of
the scope, already holding the window row's lock, deletes the rows it sees
and adds them to the window (``plugins.rate_limiter.store``). The one index
is the one the check finds them by: each settle pays for no other.
"""

# Frozen DDL of this migration's time (valid on SQLite and PostgreSQL).
STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS rate_limit_settled ("
    " request_id VARCHAR(64) NOT NULL,"
    " kind VARCHAR(16) NOT NULL,"
    " entity VARCHAR(255) NOT NULL,"
    " settled_at DOUBLE PRECISION NOT NULL,"
    " tokens BIGINT NOT NULL,"
    " released INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS rate_limit_settled_kind_entity"
    " ON rate_limit_settled (kind, entity)",
)
