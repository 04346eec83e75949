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
