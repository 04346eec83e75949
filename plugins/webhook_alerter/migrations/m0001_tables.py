"""The webhook alerter's tables: the outbox of alerts to send, and the once-per-period marks."""

# Frozen DDL, as release 1d85003 created these tables: never derived from today's models.
SQLITE = (
    (
        'CREATE TABLE IF NOT EXISTS "webhook_alert_once" ('
        '"key" VARCHAR(512) NOT NULL PRIMARY KEY, '
        '"created_at" REAL NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "webhook_outbox" ('
        '"id" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"event" VARCHAR(64) NOT NULL, '
        '"payload" TEXT NOT NULL, '
        '"created_at" REAL NOT NULL, '
        '"next_attempt_at" REAL NOT NULL, '
        '"attempts" INTEGER NOT NULL, '
        '"claimed_until" REAL, '
        '"claim_token" VARCHAR(32), '
        '"sent_at" REAL, '
        '"last_error" TEXT)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "webhook_outbox_due" ON "webhook_outbox" ('
        '"next_attempt_at") WHERE ("sent_at" IS NULL)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "webhook_outbox_sent" ON "webhook_outbox" ('
        '"sent_at") WHERE ("sent_at" IS NOT NULL)'
    ),
)

POSTGRES = (
    (
        'CREATE TABLE IF NOT EXISTS "webhook_alert_once" ('
        '"key" VARCHAR(512) NOT NULL PRIMARY KEY, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "webhook_outbox" ('
        '"id" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"event" VARCHAR(64) NOT NULL, '
        '"payload" TEXT NOT NULL, '
        '"created_at" DOUBLE PRECISION NOT NULL, '
        '"next_attempt_at" DOUBLE PRECISION NOT NULL, '
        '"attempts" INTEGER NOT NULL, '
        '"claimed_until" DOUBLE PRECISION, '
        '"claim_token" VARCHAR(32), '
        '"sent_at" DOUBLE PRECISION, '
        '"last_error" TEXT)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "webhook_outbox_due" ON "webhook_outbox" ('
        '"next_attempt_at") WHERE ("sent_at" IS NULL)'
    ),
    (
        'CREATE INDEX IF NOT EXISTS "webhook_outbox_sent" ON "webhook_outbox" ('
        '"sent_at") WHERE ("sent_at" IS NOT NULL)'
    ),
)
