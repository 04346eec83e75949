"""The plugin manager: builtins from ``plugins/``, third parties by entry point.

Builtins register through the same manager as third-party plugins, so the
core has no special case for them. ``plugins.disable`` in the config turns
any of them off by name; a third-party plugin replaces a builtin by
disabling it and registering its own implementation.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any

import pluggy

from proxy import hookspecs
from proxy.config import Config

log = logging.getLogger("comptroller.plugins")

ENTRY_POINT_GROUP = "comptroller"

# In the order their checks run (SPEC section 6: proxy, key, user, end user;
# then the rate limiter). pluggy calls the last registered first, so they are
# registered in reverse.
BUILTIN_PLUGINS: list[str] = [
    "proxy_budget",
    "key_budget",
    "user_budget",
    "end_user_budget",
    "default_end_user_budget",
    "rate_limiter",
    "webhook_alerter",
]


def make_plugin_manager(
    config: Config, extra: list[tuple[str, Any]] | None = None
) -> pluggy.PluginManager:
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(config.plugins.disable)
    known: set[str] = set()
    for name in reversed(BUILTIN_PLUGINS):
        known.add(name)
        if name not in disabled:
            module = importlib.import_module(f"plugins.{name}")
            # A builtin module may expose its hooks on an object named ``plugin``.
            pm.register(getattr(module, "plugin", module), name=name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        known.add(ep.name)
        if ep.name in disabled:
            continue
        if pm.has_plugin(ep.name):
            raise RuntimeError(f"plugin name {ep.name!r} is taken: disable the builtin first")
        pm.register(ep.load(), name=ep.name)
        log.info("plugin %s loaded from entry point %s", ep.name, ep.value)
    for name, plugin in extra or []:
        known.add(name)
        if name not in disabled:
            pm.register(plugin, name=name)
    for name in disabled - known:
        log.warning("plugins.disable names %r, which is not an installed plugin", name)
    pm.check_pending()
    return pm


def call_each(hook: Any, savepoint: bool = False, **kwargs: Any) -> None:
    """Call every implementation of ``hook``, each isolated from the others.

    pluggy stops a hook chain at the first exception; hooks whose
    implementations must all run (``on_alert``, ``call_finished``) go through
    here. With ``savepoint`` each call runs in its own savepoint, so a
    failing plugin cannot abort the transaction around it.
    """
    from proxy.db import database

    for impl in reversed(hook.get_hookimpls()):
        # An implementation may declare only some of the hook's arguments.
        args = [kwargs[name] for name in impl.argnames]
        try:
            if savepoint:
                with database.atomic():
                    impl.function(*args)
            else:
                impl.function(*args)
        except Exception:
            log.exception("%s of plugin %s failed", hook.name, impl.plugin_name)
