"""The admin UI at ``/ui``: server-rendered pages whose scripts call the admin API.

The blueprint lives in :mod:`proxy.ui.views`. The core never imports the UI:
the UI registers its session check with the app (``proxy.call.auth.SESSION_CHECK``).
"""
