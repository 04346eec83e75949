"""The ``unpriced_model`` table: calls charged 0 for want of a price, per model group."""

# Frozen DDL, as release 1d85003 created these tables: never derived from today's models.
SQLITE = (
    (
        'CREATE TABLE IF NOT EXISTS "unpriced_model" ('
        '"model_group" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"upstream_model" VARCHAR(255) NOT NULL, '
        '"calls" INTEGER NOT NULL, '
        '"tokens" INTEGER NOT NULL, '
        '"first_seen" REAL NOT NULL, '
        '"last_seen" REAL NOT NULL)'
    ),
)

POSTGRES = (
    (
        'CREATE TABLE IF NOT EXISTS "unpriced_model" ('
        '"model_group" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"upstream_model" VARCHAR(255) NOT NULL, '
        '"calls" BIGINT NOT NULL, '
        '"tokens" BIGINT NOT NULL, '
        '"first_seen" DOUBLE PRECISION NOT NULL, '
        '"last_seen" DOUBLE PRECISION NOT NULL)'
    ),
)
