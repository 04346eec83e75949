"""Migrations of the rate_limiter plugin's tables (``plugin_migrations``, proxy/hookspecs.py)."""
