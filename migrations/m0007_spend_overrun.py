"""``spend_log.overrun``: what an upstream billed beyond the call's worst case.

Indexed: ``/metrics`` sums the few rows above 0. Skipped where the column exists
already (a database a pre-release build of this change made).
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
