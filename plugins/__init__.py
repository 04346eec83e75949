"""Comptroller's builtin plugins, registered through the same manager as
third-party ones: ``budgets`` (proxy, key, user, end user, default end user,
strict reservations, clamping), ``rate_limiter`` and ``webhook_alerter``."""
