"""HTTP only: the LLM routes, the admin API, models, health, metrics and docs.

Views parse a request, call into ``proxy.call`` (one metered call) or
``proxy.storage`` (admin reads and writes) and shape the answer.
"""
