"""The core tables: budgets, teams, users, keys, customers, proxy spend, spend logs."""

from peewee import Database

from proxy.storage.models import CORE_MODELS, ProxySpend


def apply(db: Database) -> None:
    db.create_tables(CORE_MODELS, safe=True)
    ProxySpend.insert(id=1, spend=0.0).on_conflict_ignore().execute()
