"""The budget plugins: one module per entity they guard, and what they share."""
