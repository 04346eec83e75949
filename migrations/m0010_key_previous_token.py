"""``key.previous_token``: the hash a regenerated key had before.

A call that was already upstream when its key was regenerated settles under
the old hash; the ledger finds the key by this column so that call still adds
to the key's spend (``proxy.storage.ledger``). Indexed: that lookup must not
scan the key table.
"""

from peewee import CharField, Database
from playhouse.migrate import SchemaMigrator, migrate


def apply(db: Database) -> None:
    if "previous_token" in {column.name for column in db.get_columns("key")}:
        return
    migrator = SchemaMigrator.from_database(db)
    migrate(
        migrator.add_column("key", "previous_token", CharField(null=True, max_length=64)),
        migrator.add_index("key", ("previous_token",), False),
    )
