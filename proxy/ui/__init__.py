"""The admin UI at ``/ui``: server-rendered pages whose scripts call the admin API.

The blueprint lives in :mod:`proxy.ui.views`; this package stays import-free
so :mod:`proxy.call.auth` can import :mod:`proxy.ui.session` without a cycle.
"""
