"""Migrations of the strict_budgets plugin's tables (``plugin_migrations``, proxy/hookspecs.py)."""
