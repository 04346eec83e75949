"""The admin API (master key): keys, users, teams, customers, budgets, spend, reports."""
