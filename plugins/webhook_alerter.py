"""Builtin plugin webhook_alerter (being written)."""
