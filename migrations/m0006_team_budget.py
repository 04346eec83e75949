"""Teams get a budget, limits, models and members (``/team/new`` with LiteLLM's fields).

The release's ``team`` table has only its id, alias, spend and creation time;
this adds the rest, each nullable (the spend ledger inserts a bare team row
with raw SQL when a key names a team nobody created). A database made while
m0001 still created tables from the models already has some of them: only
the missing columns are added.
"""

from peewee import Database, PostgresqlDatabase

# Frozen column types of this migration's time: (SQLite, PostgreSQL).
NEW_COLUMNS = {
    "max_budget": ("REAL", "DOUBLE PRECISION"),
    "budget_duration": ("VARCHAR(32)", "VARCHAR(32)"),
    "budget_reset_at": ("REAL", "DOUBLE PRECISION"),
    "max_parallel_requests": ("INTEGER", "INTEGER"),
    "tpm_limit": ("INTEGER", "BIGINT"),
    "rpm_limit": ("INTEGER", "BIGINT"),
    "models": ("TEXT", "TEXT"),
    "members_with_roles": ("TEXT", "TEXT"),
    "metadata": ("TEXT", "TEXT"),
    "blocked": ("INTEGER", "BOOLEAN"),
    "updated_at": ("REAL", "DOUBLE PRECISION"),
}


def apply(db: Database) -> None:
    postgres = isinstance(getattr(db, "obj", db), PostgresqlDatabase)
    have = {column.name for column in db.get_columns("team")}
    for name, (sqlite_type, postgres_type) in NEW_COLUMNS.items():
        if name not in have:
            kind = postgres_type if postgres else sqlite_type
            db.execute_sql(f'ALTER TABLE "team" ADD COLUMN "{name}" {kind}')
