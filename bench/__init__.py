"""Load benchmarks of Comptroller, run on demand (never in CI).

``python -m bench`` measures the overhead per call with every builtin plugin
on against a fast mock upstream (see :mod:`bench.run` and ``bench/RESULTS.md``);
``python -m bench.webhook_outage`` measures the effect of a dead webhook.
"""
