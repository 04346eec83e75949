"""``spend_log.overrun``: what an upstream billed beyond the call's worst case.

A database made after this column was added got it (and its index) from m0001.
"""

from peewee import Database, DoubleField
from playhouse.migrate import SchemaMigrator, migrate


def apply(db: Database) -> None:
    if "overrun" in {column.name for column in db.get_columns("spend_log")}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("spend_log", "overrun", DoubleField(default=0.0)),
        migrator.add_index("spend_log", ("overrun",), False),
    )
