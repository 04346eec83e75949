"""Builtin plugin default_end_user_budget (being written)."""
