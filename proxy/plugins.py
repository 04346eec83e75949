"""The plugin manager: builtins from ``plugins/``, third parties by entry point.

Builtins register through the same manager as third-party plugins, so the
core has no special case for them. ``plugins.disable`` in the config turns
any of them off by name.

A third-party plugin replaces a builtin by taking its name: its entry point
in the ``comptroller`` group is named like the builtin (``rate_limiter =
"my_limiter"``) and the builtin's name is listed in ``plugins.disable``.
The builtin is then not loaded and the entry point is registered in its
place, so its checks run where the builtin's ran (SPEC section 6 order). An
entry point named like a builtin that is still enabled stops start-up: which
of the two should run is the operator's choice, never a silent one. For any
other name, ``plugins.disable`` turns the entry point off.
"""

from __future__ import annotations

import importlib
import logging
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from proxy import hookcalls, hookspecs
from proxy.config import Config

log = logging.getLogger("comptroller.plugins")

ENTRY_POINT_GROUP = "comptroller"

# In the order their checks run (SPEC section 6: proxy, key, user, team, end user;
# then the rate limiter). pluggy calls the last registered first, so they are
# registered in reverse.
BUILTIN_MODULES: dict[str, str] = {
    "proxy_budget": "plugins.budgets.proxy",
    "key_budget": "plugins.budgets.key",
    "user_budget": "plugins.budgets.user",
    "team_budget": "plugins.budgets.team",
    "end_user_budget": "plugins.budgets.end_user",
    "default_end_user_budget": "plugins.budgets.default_end_user",
    "strict_budgets": "plugins.budgets.strict",
    "rate_limiter": "plugins.rate_limiter.hooks",
    "webhook_alerter": "plugins.webhook_alerter.hooks",
}
BUILTIN_PLUGINS: list[str] = list(BUILTIN_MODULES)


def _distribution(ep: EntryPoint) -> str:
    name = ep.dist.name if ep.dist is not None else None
    return name or "an unknown distribution"


def _installed_entry_points(disabled: set[str]) -> dict[str, EntryPoint]:
    """The ``comptroller`` entry points by name; two distributions may not share
    the name of a plugin that is to be loaded."""
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        other = found.get(ep.name)
        if other is not None and (ep.name not in disabled or ep.name in BUILTIN_PLUGINS):
            raise RuntimeError(
                f"plugin name {ep.name!r} is declared by both {_distribution(other)} and "
                f"{_distribution(ep)}: uninstall one of them"
            )
        found[ep.name] = ep
    return found


def _builtin(name: str) -> Any:
    """A builtin's hooks: its module, the object it names ``plugin``, or a new
    instance of its class ``Plugin`` (state of its own for each app)."""
    module = importlib.import_module(BUILTIN_MODULES[name])
    factory = getattr(module, "Plugin", None)
    if factory is not None:
        return factory()
    return getattr(module, "plugin", module)


def make_plugin_manager(
    config: Config, extra: list[tuple[str, Any]] | None = None
) -> pluggy.PluginManager:
    pm = hookcalls.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    disabled = set(config.plugins.disable)
    installed = _installed_entry_points(disabled)
    for name in BUILTIN_PLUGINS:
        if name in installed and name not in disabled:
            dist = _distribution(installed[name])
            raise RuntimeError(
                f"plugin {name!r} from {dist} is named like the builtin {name} plugin, which is "
                f"enabled: add {name} to plugins.disable in the config "
                f"(plugins: {{disable: [{name}]}}) to let it replace the builtin, "
                f"or uninstall {dist} to keep the builtin"
            )
    for name in reversed(BUILTIN_PLUGINS):
        if name not in disabled:
            pm.register(_builtin(name), name=name)
        elif name in installed:
            # Registered where the builtin would have been: its checks run in the builtin's turn.
            ep = installed.pop(name)
            pm.register(ep.load(), name=name)
            log.info("plugin %s from %s replaces the builtin", name, _distribution(ep))
    for name, ep in installed.items():
        if name in disabled:
            continue
        pm.register(ep.load(), name=name)
        log.info("plugin %s loaded from entry point %s (%s)", name, ep.value, _distribution(ep))
    known = {*BUILTIN_PLUGINS, *installed}
    for name, plugin in extra or []:
        known.add(name)
        if name not in disabled:
            pm.register(plugin, name=name)
    for name in disabled - known:
        log.warning("plugins.disable names %r, which is not an installed plugin", name)
    pm.check_pending()
    return pm


def isolated_callers(pm: pluggy.PluginManager, name: str) -> list[tuple[str, Any]]:
    """One hook caller per plugin implementing hook ``name``, in pluggy's call
    order, each calling that plugin's implementation alone through pluggy (what
    :func:`call_each` uses while something watches hook calls)."""
    impls = getattr(pm.hook, name).get_hookimpls()
    cache = _isolated.setdefault(pm, {})
    cached = cache.get(name)
    if cached is not None and cached[0] == impls:
        return cached[1]
    plugins: list[Any] = []
    for impl in reversed(impls):  # pluggy calls the last of the list first
        if not any(impl.plugin is seen for seen in plugins):
            plugins.append(impl.plugin)
    callers = [
        (
            pm.get_name(plugin) or repr(plugin),
            pm.subset_hook_caller(name, [other for other in plugins if other is not plugin]),
        )
        for plugin in plugins
    ]
    cache[name] = (impls, callers)
    return callers


_isolated: weakref.WeakKeyDictionary[pluggy.PluginManager, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


def call_each(
    pm: pluggy.PluginManager,
    name: str,
    isolate: Callable[[], AbstractContextManager[Any]] | None = None,
    **kwargs: Any,
) -> None:
    """Call every plugin's implementation of hook ``name``, each isolated from the others.

    pluggy stops a hook chain at the first exception; hooks whose
    implementations must all run (``on_alert``, ``call_finished``) go through
    here. With ``isolate`` (a savepoint) each plugin's call runs inside it,
    so a failing plugin cannot abort the transaction around it. Each
    plugin's part runs as pluggy would run it alone (:mod:`proxy.hookcalls`).
    """
    plan = hookcalls.plan(pm, name)
    if plan is None or not hookcalls.takes(plan, kwargs):
        for plugin_name, caller in isolated_callers(pm, name):
            _isolated_call(name, plugin_name, isolate, _with_keywords(caller), kwargs)
        return
    for plugin_name, part in plan.each:
        _isolated_call(name, plugin_name, isolate, part, kwargs)


def _with_keywords(caller: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    return lambda kwargs: caller(**kwargs)


def _isolated_call(
    name: str,
    plugin_name: str,
    isolate: Callable[[], AbstractContextManager[Any]] | None,
    call: Callable[[dict[str, Any]], Any],
    kwargs: dict[str, Any],
) -> None:
    try:
        if isolate is None:
            call(kwargs)
        else:
            with isolate():
                call(kwargs)
    except Exception:
        log.exception("%s of plugin %s failed", name, plugin_name)
