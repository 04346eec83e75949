"""The strict_budgets plugin's tables: reservations, and the rows they lock.

``budget_reservation`` was created by the budget plugins' own m0001 before
strict reservations became a plugin of their own: here ``IF NOT EXISTS``, the
same DDL. ``budget_reservation_lock`` is new: one row per entity, which a
reservation locks instead of the core's rows.
"""

SQLITE = (
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
    (
        'CREATE TABLE IF NOT EXISTS "budget_reservation_lock" ('
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"locked_at" REAL NOT NULL, '
        'PRIMARY KEY ("entity_kind", "entity_id"))'
    ),
)

POSTGRES = (
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
    (
        'CREATE TABLE IF NOT EXISTS "budget_reservation_lock" ('
        '"entity_kind" VARCHAR(16) NOT NULL, '
        '"entity_id" VARCHAR(255) NOT NULL, '
        '"locked_at" DOUBLE PRECISION NOT NULL, '
        'PRIMARY KEY ("entity_kind", "entity_id"))'
    ),
)
