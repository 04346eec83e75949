"""Builtin plugin key_budget (being written)."""
