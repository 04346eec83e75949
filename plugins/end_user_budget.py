"""Builtin plugin end_user_budget (being written)."""
