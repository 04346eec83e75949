"""``user.blocked``: ``/user/update {"blocked": true}`` refuses every call of the user's keys."""

from peewee import BooleanField, Database
from playhouse.migrate import SchemaMigrator, migrate


def apply(db: Database) -> None:
    # A database made after this column was added got it from m0001.
    if "blocked" not in {column.name for column in db.get_columns("user")}:
        column = BooleanField(default=False)
        migrate(SchemaMigrator.from_database(db).add_column("user", "blocked", column))
