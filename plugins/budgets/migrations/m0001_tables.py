"""The budget plugins' tables: strict-mode reservations and the once-per-period alert marks."""

# Frozen DDL, as release 1d85003 created these tables: never derived from today's models.
SQLITE = (
    (
        'CREATE TABLE IF NOT EXISTS "budget_alert_sent" ('
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"event" VARCHAR(32) NOT NULL, '
        '"line" REAL NOT NULL, '
        '"period" REAL NOT NULL, '
        '"sent_at" REAL NOT NULL, PRIMARY KEY ("entity_kind", '
        '"entity_id", '
        '"event", '
        '"line", '
        '"period"))'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "budget_reservation" ('
        '"id" INTEGER NOT NULL PRIMARY KEY, '
        '"request_id" VARCHAR(64) NOT NULL, '
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"amount" REAL NOT NULL, '
        '"expires_at" REAL NOT NULL, '
        '"created_at" REAL NOT NULL)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "budget_reservation_request_id" ON "budget_reservation" ('
        '"request_id")'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "budget_reservation_entity_kind_entity_id_expires_at" '
        'ON "budget_reservation" ('
        '"entity_kind", "entity_id", "expires_at")'
    ),
)

POSTGRES = (
    (
        'CREATE TABLE IF NOT EXISTS "budget_alert_sent" ('
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"event" VARCHAR(32) NOT NULL, '
        '"line" DOUBLE PRECISION NOT NULL, '
        '"period" DOUBLE PRECISION NOT NULL, '
        '"sent_at" DOUBLE PRECISION NOT NULL, PRIMARY KEY ("entity_kind", '
        '"entity_id", '
        '"event", '
        '"line", '
        '"period"))'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "budget_reservation" ('
        '"id" SERIAL NOT NULL PRIMARY KEY, '
        '"request_id" VARCHAR(64) NOT NULL, '
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"amount" DOUBLE PRECISION NOT NULL, '
        '"expires_at" DOUBLE PRECISION NOT NULL, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "budget_reservation_request_id" ON "budget_reservation" ('
        '"request_id")'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "budget_reservation_entity_kind_entity_id_expires_at" '
        'ON "budget_reservation" ('
        '"entity_kind", "entity_id", "expires_at")'
    ),
)
