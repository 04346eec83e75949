"""``response_owner.deployment_id``: the deployment whose upstream holds the response
(a model name may have several deployments, each its own upstream account)."""

from peewee import CharField, Database
from playhouse.migrate import SchemaMigrator, migrate


def apply(db: Database) -> None:
    if "deployment_id" in {column.name for column in db.get_columns("response_owner")}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("response_owner", "deployment_id", CharField(max_length=64, null=True))
    )
