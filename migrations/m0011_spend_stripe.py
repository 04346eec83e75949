"""The ``spend_stripe`` table: keys', users', teams' and customers' spend, striped.

An entity's spend is its row's ``spend`` plus the sum of its stripes, so that
settles of one busy key (its user, team, end user) add to different rows and
never queue on one row lock (``proxy.storage.stripes``). Rows made before
this migration keep their whole spend in their own ``spend`` column: nothing
to move.
"""

# Frozen DDL of this migration's time (valid on SQLite and PostgreSQL).
STATEMENTS = (
    "CREATE TABLE IF NOT EXISTS spend_stripe ("
    " kind VARCHAR(16) NOT NULL,"
    " entity_id VARCHAR(255) NOT NULL,"
    " stripe INTEGER NOT NULL,"
    " spend DOUBLE PRECISION NOT NULL DEFAULT 0,"
    " PRIMARY KEY (kind, entity_id, stripe))",
)
