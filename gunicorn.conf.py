"""Defaults for ``gunicorn 'wsgi:app'`` (gunicorn reads ./gunicorn.conf.py).

The same settings as the ``comptroller`` command (``proxy.serving``); the
bind matches the port the LiteLLM-style examples use. Override any of them on
the command line or with GUNICORN_CMD_ARGS.
"""

import os

from proxy.serving import default_threads, default_workers, gunicorn_settings

_settings = gunicorn_settings(
    os.environ.get("COMPTROLLER_BIND", "127.0.0.1:4000"), default_workers(), default_threads()
)
bind = _settings["bind"]
workers = _settings["workers"]
worker_class = _settings["worker_class"]
threads = _settings["threads"]
timeout = _settings["timeout"]
graceful_timeout = _settings["graceful_timeout"]
keepalive = _settings["keepalive"]


def when_ready(server):  # type: ignore[no-untyped-def]
    """In the arbiter, before the workers start: tell them how many they are (each
    checks its connection pool against the server's limit), and warn once when the
    trial master key listens beyond loopback."""
    from proxy.cli import warn_if_trial_key_exposed
    from proxy.config import ConfigError, load_config
    from proxy.workers import announce_workers

    announce_workers(server.cfg.workers)
    try:
        config = load_config()
    except ConfigError:
        return  # the workers report it
    for address in server.cfg.address:
        if isinstance(address, tuple):
            warn_if_trial_key_exposed(config, str(address[0]))
