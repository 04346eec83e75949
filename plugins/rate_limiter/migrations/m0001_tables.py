"""The rate limiter's tables: one minute window per limited entity, one lease per parallel slot."""

# Frozen DDL, as release 1d85003 created these tables: never derived from today's models.
SQLITE = (
    (
        'CREATE TABLE IF NOT EXISTS "rate_limit_lease" ('
        '"request_id" VARCHAR(64) NOT NULL, '
        '"kind" VARCHAR(16) NOT NULL, '
        '"entity" VARCHAR(255) NOT NULL, '
        '"expires_at" REAL NOT NULL, PRIMARY KEY ("request_id", '
        '"kind"))'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "rate_limit_lease_expires_at" ON "rate_limit_lease" ('
        '"expires_at")'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "rate_limit_window" ('
        '"kind" VARCHAR(16) NOT NULL, '
        '"entity" VARCHAR(255) NOT NULL, '
        '"window_start" REAL NOT NULL, '
        '"requests" INTEGER NOT NULL, '
        '"tokens" INTEGER NOT NULL, '
        '"in_flight" INTEGER NOT NULL, '
        '"rpm_limit" INTEGER, '
        '"tpm_limit" INTEGER, '
        '"parallel_limit" INTEGER, '
        '"admitted" INTEGER NOT NULL, PRIMARY KEY ("kind", '
        '"entity"))'
    ),
)

POSTGRES = (
    (
        'CREATE TABLE IF NOT EXISTS "rate_limit_lease" ('
        '"request_id" VARCHAR(64) NOT NULL, '
        '"kind" VARCHAR(16) NOT NULL, '
        '"entity" VARCHAR(255) NOT NULL, '
        '"expires_at" DOUBLE PRECISION NOT NULL, PRIMARY KEY ("request_id", '
        '"kind"))'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "rate_limit_lease_expires_at" ON "rate_limit_lease" ('
        '"expires_at")'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "rate_limit_window" ('
        '"kind" VARCHAR(16) NOT NULL, '
        '"entity" VARCHAR(255) NOT NULL, '
        '"window_start" DOUBLE PRECISION NOT NULL, '
        '"requests" BIGINT NOT NULL, '
        '"tokens" BIGINT NOT NULL, '
        '"in_flight" INTEGER NOT NULL, '
        '"rpm_limit" BIGINT, '
        '"tpm_limit" BIGINT, '
        '"parallel_limit" INTEGER, '
        '"admitted" INTEGER NOT NULL, PRIMARY KEY ("kind", '
        '"entity"))'
    ),
)
