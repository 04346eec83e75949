"""Migrations of the webhook_alerter plugin's tables (``plugin_migrations``, proxy/hookspecs.py)."""
