"""The admin API (master key): keys, users, customers, budgets, spend."""
