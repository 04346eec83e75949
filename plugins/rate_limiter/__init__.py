"""The rate limiter: RPM, TPM and parallel requests, shared through the database.

``hooks`` holds the hooks; ``limits`` (which limits govern a call), ``tables``
(the plugin's tables), ``store`` (the atomic statements on them) and
``report`` (headers, refusal) hold what they use.
"""
