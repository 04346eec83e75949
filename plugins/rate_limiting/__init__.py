"""The rate limiter's parts: limits per call, the shared counters, the answer.

``plugins/rate_limiter.py`` holds the hooks; this package holds what they use:
``limits`` (which limits govern a call), ``tables`` (the plugin's tables),
``store`` (the atomic statements on them) and ``report`` (headers, refusal).
"""
