"""Builtin plugin user_budget (being written)."""
