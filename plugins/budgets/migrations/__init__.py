"""Migrations of the budgets plugin's tables (``plugin_migrations``, proxy/hookspecs.py)."""
