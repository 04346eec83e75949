"""Schema migrations, applied in name order by :func:`proxy.storage.migrate.migrate`.

Each module is named ``mNNNN_<what>.py`` and defines ``apply(db)``. A
migration runs once per database; the applied names are recorded in the
``comptroller_migration`` table.
"""
