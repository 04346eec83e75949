"""Teams get a budget, limits, models and members (``/team/new`` with LiteLLM's fields).

A database made before this migration has a ``team`` table with only its id,
alias, spend and creation time; a new one already has every column (m0001
creates the current tables), so only the missing columns are added.
"""

from peewee import Database
from playhouse.migrate import SchemaMigrator, migrate

from proxy.storage.models import Team

NEW_COLUMNS = (
    "max_budget",
    "budget_duration",
    "budget_reset_at",
    "max_parallel_requests",
    "tpm_limit",
    "rpm_limit",
    "models",
    "members_with_roles",
    "metadata",
    "blocked",
    "updated_at",
)


def apply(db: Database) -> None:
    have = {column.name for column in db.get_columns("team")}
    migrator = SchemaMigrator.from_database(db)
    fields = Team._meta.fields
    operations = [
        migrator.add_column("team", fields[name].column_name, fields[name])
        for name in NEW_COLUMNS
        if fields[name].column_name not in have
    ]
    if operations:
        migrate(*operations)
