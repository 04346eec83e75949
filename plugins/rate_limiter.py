"""Builtin plugin rate_limiter (being written)."""
