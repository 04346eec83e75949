"""The core's schema migrations, applied in name order by :func:`proxy.storage.migrate.migrate`.

Each module is named ``mNNNN_<what>.py`` and holds frozen DDL of its own time:
``SQLITE`` and ``POSTGRES`` statement tuples (or ``STATEMENTS`` for both), and
optionally ``apply(db)`` for a step that needs Python. A migration never
imports the live models. It runs once per database; the applied names are
recorded in the ``comptroller_migration`` table. A schema change is a new
module; an existing one is never edited.
"""
