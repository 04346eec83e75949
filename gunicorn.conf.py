"""Defaults for ``gunicorn 'wsgi:app'`` (gunicorn reads ./gunicorn.conf.py).

Threads let one worker relay several streams at once; the bind matches the
port the LiteLLM-style examples use. Override any of them on the command
line or with GUNICORN_CMD_ARGS.
"""

import os

bind = os.environ.get("COMPTROLLER_BIND", "127.0.0.1:4000")
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("COMPTROLLER_THREADS", "16"))
timeout = 120
graceful_timeout = 15
keepalive = 5


def when_ready(server):  # type: ignore[no-untyped-def]
    """Warn once, in the arbiter, when the trial master key listens beyond loopback."""
    from proxy.cli import warn_if_trial_key_exposed
    from proxy.config import ConfigError, load_config

    try:
        config = load_config()
    except ConfigError:
        return  # the workers report it
    for address in server.cfg.address:
        if isinstance(address, tuple):
            warn_if_trial_key_exposed(config, str(address[0]))
