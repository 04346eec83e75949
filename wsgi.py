"""WSGI entry point: ``gunicorn 'wsgi:app'``.

Reads ``$COMPTROLLER_CONFIG`` (default ``config.yaml``; built-in defaults
when there is none).
"""

from proxy.app import create_app
from proxy.cli import configure_logging

configure_logging()
app = create_app()
