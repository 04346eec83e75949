"""Builtin plugin proxy_budget (being written)."""
