"""The ``unpriced_model`` table: calls charged 0 for want of a price, per model group."""

from peewee import Database

from proxy.storage.models import UnpricedModel


def apply(db: Database) -> None:
    db.create_tables([UnpricedModel], safe=True)
