"""The core tables: budgets, teams, users, keys, customers, proxy spend, spend logs."""

import time

from peewee import Database

# Frozen DDL, as release 1d85003 created these tables: never derived from today's models.
SQLITE = (
    (
        'CREATE TABLE IF NOT EXISTS "budget" ('
        '"budget_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"max_budget" REAL, '
        '"soft_budget" REAL, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" INTEGER, '
        '"rpm_limit" INTEGER, '
        '"budget_duration" VARCHAR(32), '
        '"created_at" REAL NOT NULL, '
        '"updated_at" REAL NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "customer" ('
        '"user_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"alias" VARCHAR(255), '
        '"spend" REAL NOT NULL, '
        '"blocked" INTEGER NOT NULL, '
        '"budget_id" VARCHAR(255), '
        '"allowed_model_region" VARCHAR(32), '
        '"default_model" VARCHAR(255), '
        '"budget_reset_at" REAL, '
        '"created_at" REAL NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "customer_budget_id" ON "customer" ("budget_id")',
    (
        'CREATE TABLE IF NOT EXISTS "key" ('
        '"token" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"key_name" VARCHAR(32) NOT NULL, '
        '"key_alias" VARCHAR(255), '
        '"user_id" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"models" TEXT NOT NULL, '
        '"max_budget" REAL, '
        '"soft_budget" REAL, '
        '"spend" REAL NOT NULL, '
        '"budget_duration" VARCHAR(32), '
        '"budget_reset_at" REAL, '
        '"expires" REAL, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" INTEGER, '
        '"rpm_limit" INTEGER, '
        '"metadata" TEXT NOT NULL, '
        '"blocked" INTEGER NOT NULL, '
        '"created_at" REAL NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "key_user_id" ON "key" ("user_id")',
    (
        'CREATE TABLE IF NOT EXISTS "proxy_spend" ('
        '"id" INTEGER NOT NULL PRIMARY KEY, '
        '"spend" REAL NOT NULL, '
        '"budget_reset_at" REAL, '
        '"created_at" REAL NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "spend_log" ('
        '"request_id" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"call_type" VARCHAR(32) NOT NULL, '
        '"api_key" VARCHAR(64), '
        '"user_id" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"end_user" VARCHAR(255), '
        '"model" VARCHAR(255) NOT NULL, '
        '"model_group" VARCHAR(255) NOT NULL, '
        '"prompt_tokens" INTEGER NOT NULL, '
        '"completion_tokens" INTEGER NOT NULL, '
        '"total_tokens" INTEGER NOT NULL, '
        '"spend" REAL NOT NULL, '
        '"start_time" REAL NOT NULL, '
        '"end_time" REAL NOT NULL, '
        '"status" VARCHAR(32) NOT NULL, '
        '"metadata" TEXT NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "spend_log_api_key" ON "spend_log" ("api_key")',
    'CREATE INDEX IF NOT EXISTS "spend_log_user_id" ON "spend_log" ("user_id")',
    'CREATE INDEX IF NOT EXISTS "spend_log_end_user" ON "spend_log" ("end_user")',
    'CREATE INDEX IF NOT EXISTS "spend_log_start_time" ON "spend_log" ("start_time")',
    (
        'CREATE TABLE IF NOT EXISTS "team" ('
        '"team_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"team_alias" VARCHAR(255), '
        '"spend" REAL NOT NULL, '
        '"created_at" REAL NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "user" ('
        '"user_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"user_email" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"models" TEXT NOT NULL, '
        '"max_budget" REAL, '
        '"spend" REAL NOT NULL, '
        '"budget_duration" VARCHAR(32), '
        '"budget_reset_at" REAL, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" INTEGER, '
        '"rpm_limit" INTEGER, '
        '"metadata" TEXT NOT NULL, '
        '"created_at" REAL NOT NULL)'
    ),
)

POSTGRES = (
    (
        'CREATE TABLE IF NOT EXISTS "budget" ('
        '"budget_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"max_budget" DOUBLE PRECISION, '
        '"soft_budget" DOUBLE PRECISION, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" BIGINT, '
        '"rpm_limit" BIGINT, '
        '"budget_duration" VARCHAR(32), '
        '"created_at" DOUBLE PRECISION NOT NULL, '
        '"updated_at" DOUBLE PRECISION NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "customer" ('
        '"user_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"alias" VARCHAR(255), '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"blocked" BOOLEAN NOT NULL, '
        '"budget_id" VARCHAR(255), '
        '"allowed_model_region" VARCHAR(32), '
        '"default_model" VARCHAR(255), '
        '"budget_reset_at" DOUBLE PRECISION, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "customer_budget_id" ON "customer" ("budget_id")',
    (
        'CREATE TABLE IF NOT EXISTS "key" ('
        '"token" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"key_name" VARCHAR(32) NOT NULL, '
        '"key_alias" VARCHAR(255), '
        '"user_id" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"models" TEXT NOT NULL, '
        '"max_budget" DOUBLE PRECISION, '
        '"soft_budget" DOUBLE PRECISION, '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"budget_duration" VARCHAR(32), '
        '"budget_reset_at" DOUBLE PRECISION, '
        '"expires" DOUBLE PRECISION, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" BIGINT, '
        '"rpm_limit" BIGINT, '
        '"metadata" TEXT NOT NULL, '
        '"blocked" BOOLEAN NOT NULL, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "key_user_id" ON "key" ("user_id")',
    (
        'CREATE TABLE IF NOT EXISTS "proxy_spend" ('
        '"id" INTEGER NOT NULL PRIMARY KEY, '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"budget_reset_at" DOUBLE PRECISION, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "spend_log" ('
        '"request_id" VARCHAR(64) NOT NULL PRIMARY KEY, '
        '"call_type" VARCHAR(32) NOT NULL, '
        '"api_key" VARCHAR(64), '
        '"user_id" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"end_user" VARCHAR(255), '
        '"model" VARCHAR(255) NOT NULL, '
        '"model_group" VARCHAR(255) NOT NULL, '
        '"prompt_tokens" INTEGER NOT NULL, '
        '"completion_tokens" INTEGER NOT NULL, '
        '"total_tokens" INTEGER NOT NULL, '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"start_time" DOUBLE PRECISION NOT NULL, '
        '"end_time" DOUBLE PRECISION NOT NULL, '
        '"status" VARCHAR(32) NOT NULL, '
        '"metadata" TEXT NOT NULL)'
    ),
    'CREATE INDEX IF NOT EXISTS "spend_log_api_key" ON "spend_log" ("api_key")',
    'CREATE INDEX IF NOT EXISTS "spend_log_user_id" ON "spend_log" ("user_id")',
    'CREATE INDEX IF NOT EXISTS "spend_log_end_user" ON "spend_log" ("end_user")',
    'CREATE INDEX IF NOT EXISTS "spend_log_start_time" ON "spend_log" ("start_time")',
    (
        'CREATE TABLE IF NOT EXISTS "team" ('
        '"team_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"team_alias" VARCHAR(255), '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
    (
        'CREATE TABLE IF NOT EXISTS "user" ('
        '"user_id" VARCHAR(255) NOT NULL PRIMARY KEY, '
        '"user_email" VARCHAR(255), '
        '"team_id" VARCHAR(255), '
        '"models" TEXT NOT NULL, '
        '"max_budget" DOUBLE PRECISION, '
        '"spend" DOUBLE PRECISION NOT NULL, '
        '"budget_duration" VARCHAR(32), '
        '"budget_reset_at" DOUBLE PRECISION, '
        '"max_parallel_requests" INTEGER, '
        '"tpm_limit" BIGINT, '
        '"rpm_limit" BIGINT, '
        '"metadata" TEXT NOT NULL, '
        '"created_at" DOUBLE PRECISION NOT NULL)'
    ),
)


def apply(db: Database) -> None:
    """The proxy-wide counter's one row (id 1), after the statements above."""
    db.execute_sql(
        "INSERT INTO proxy_spend (id, spend, created_at) "
        f"VALUES (1, 0.0, {time.time()!r}) ON CONFLICT DO NOTHING"
    )
