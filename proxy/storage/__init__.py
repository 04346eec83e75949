"""The only package with SQL or a SQLite/PostgreSQL branch.

Connections, core models, migrations, the call's one read (``lookup``), the
spend ledger, budget resets, prepared statements and deferred writes.
"""
