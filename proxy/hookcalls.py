"""Hook calls at the cost of plain function calls, with pluggy's semantics.

For every call, pluggy's ``HookCaller`` works out again what does not change
while an app runs: it checks the arguments against the spec, copies the list
of implementations, reads the spec's options, then runs its generic loop with
wrapper bookkeeping; a hook whose implementations must each run on their own
(``call_finished``, ``on_alert``) costs one such call per plugin. A metered
call made about a dozen of them, which cost more than most of the
implementations they ran (bench/RESULTS.md, "CPU per call").

Here each hook's :class:`Plan` is worked out once, from pluggy's public API
(``get_hookimpls()``; each ``HookImpl``'s ``function``, ``argnames``,
``kwargnames``, ``wrapper``, ``hookwrapper`` and ``plugin``; the spec's
``opts``, ``argnames`` and ``kwargdefaults``) and kept until a plugin is
registered or unregistered or a spec is added (:class:`PluginManager` forgets
its plans then). A plan runs as pluggy's loop does: the same order (last
registered first, ``tryfirst``/``trylast``, wrappers around the rest), the
same ``firstresult`` stop, the same protocol for new-style wrappers, the same
exceptions. Third-party plugins get the same calls as the builtins: a plan
does not know which is which.

Through pluggy instead, call for call: a hook with an old-style
``hookwrapper`` or a historic spec, a call that lacks an argument of the
spec (pluggy warns), a manager that is not this module's
:class:`PluginManager` (tests and benchmarks build plain ones), and every
hook call while something watches them (``add_hookcall_monitoring``,
``enable_tracing``), so that it sees each call as it always did.
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, cast

import pluggy


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, keeping each hook's :class:`Plan` (``None``: the hook
    goes through pluggy) and counting who watches hook calls."""

    def __init__(self, project_name: str) -> None:
        super().__init__(project_name)
        self.plans: dict[str, Plan | None] = {}
        self.watchers = 0
        self._watchers_lock = threading.Lock()

    def register(self, plugin: object, name: str | None = None) -> str | None:
        try:
            return super().register(plugin, name)
        finally:
            self.plans.clear()

    def unregister(self, plugin: object | None = None, name: str | None = None) -> Any | None:
        try:
            return super().unregister(plugin, name)
        finally:
            self.plans.clear()

    def add_hookspecs(self, module_or_class: types.ModuleType | type) -> None:
        try:
            super().add_hookspecs(module_or_class)
        finally:
            self.plans.clear()

    def add_hookcall_monitoring(
        self, before: Callable[..., None], after: Callable[..., None]
    ) -> Callable[[], None]:
        # enable_tracing() comes here too.
        undo = super().add_hookcall_monitoring(before, after)
        with self._watchers_lock:
            self.watchers += 1
        watching = [True]

        def unwatch() -> None:
            undo()
            with self._watchers_lock:
                if watching:
                    watching.clear()
                    self.watchers -= 1

        return unwatch


class Plan:
    """How one hook, or one plugin's part of it, is called: its implementations in
    call order, each as (function, argument names, names of arguments with a
    default, whether it is a new-style wrapper)."""

    __slots__ = ("name", "firstresult", "spec_args", "defaults", "calls", "wrapped", "each")

    def __init__(
        self, hook: pluggy.HookCaller, impls: Sequence[pluggy.HookImpl], pm: pluggy.PluginManager
    ) -> None:
        spec = hook.spec
        self.name = hook.name
        self.firstresult = bool(spec.opts.get("firstresult")) if spec is not None else False
        self.spec_args: tuple[str, ...] = tuple(spec.argnames) if spec is not None else ()
        self.defaults: dict[str, Any] = dict(spec.kwargdefaults) if spec is not None else {}
        # pluggy calls the last of get_hookimpls() first (wrappers are at its end).
        self.calls: tuple[Call, ...] = tuple(
            (impl.function, tuple(impl.argnames), tuple(impl.kwargnames), impl.wrapper)
            for impl in reversed(impls)
        )
        self.wrapped = any(impl.wrapper for impl in impls) or any(c[2] for c in self.calls)
        # Each plugin's part alone (call_each), in the order pluggy calls the plugins.
        plugins: list[Any] = []
        for impl in reversed(impls):
            if not any(impl.plugin is seen for seen in plugins):
                plugins.append(impl.plugin)
        self.each: tuple[tuple[str, Plan], ...] = ()
        if len(plugins) > 1:
            self.each = tuple(
                (
                    pm.get_name(plugin) or repr(plugin),
                    Plan(hook, [impl for impl in impls if impl.plugin is plugin], pm),
                )
                for plugin in plugins
            )
        elif plugins:
            self.each = ((pm.get_name(plugins[0]) or repr(plugins[0]), self),)

    def __call__(self, kwargs: Mapping[str, Any]) -> Any:
        """The hook's answer to ``kwargs``: pluggy's loop, for plain implementations
        inline (the common case), else :func:`_run_wrapped`."""
        if self.defaults:
            kwargs = {**self.defaults, **kwargs}
        if self.wrapped:
            return _run_wrapped(self, kwargs)
        results = []
        for function, argnames, _, _ in self.calls:
            try:
                args = [kwargs[name] for name in argnames]
            except KeyError as err:
                raise _missing(err) from err
            result = function(*args)
            if result is not None:
                if self.firstresult:
                    return result
                results.append(result)
        return None if self.firstresult else results


Call = tuple[Callable[..., Any], tuple[str, ...], tuple[str, ...], bool]


def plan(pm: pluggy.PluginManager, name: str) -> Plan | None:
    """Hook ``name``'s plan, or ``None`` when this call must go through pluggy."""
    if not isinstance(pm, PluginManager) or pm.watchers:
        return None
    try:
        return pm.plans[name]
    except KeyError:
        pass
    hook: pluggy.HookCaller = getattr(pm.hook, name)
    impls = hook.get_hookimpls()
    found = None
    if not hook.is_historic() and not any(impl.hookwrapper for impl in impls):
        found = Plan(hook, impls, pm)
    pm.plans[name] = found
    return found


def takes(plan: Plan, kwargs: Mapping[str, Any]) -> bool:
    """Whether a call gives every argument of the spec (else pluggy warns)."""
    for name in plan.spec_args:
        if name not in kwargs:
            return False
    return True


def call_hook(pm: pluggy.PluginManager, name: str, **kwargs: Any) -> Any:
    """``pm.hook.<name>(**kwargs)``, as pluggy would answer it."""
    found = plan(pm, name)
    if found is None or not takes(found, kwargs):
        return getattr(pm.hook, name)(**kwargs)
    return found(kwargs)


def _missing(err: KeyError) -> pluggy.HookCallError:
    return pluggy.HookCallError(f"hook call must provide argument {err.args[0]!r}")


def _invoke(call: Call, kwargs: Mapping[str, Any]) -> Any:
    """One implementation called as pluggy calls it (arguments with a default
    only if the hook call gives them)."""
    function, argnames, kwargnames, _ = call
    try:
        args = [kwargs[name] for name in argnames]
    except KeyError as err:
        raise _missing(err) from err
    if not kwargnames:
        return function(*args)
    given = {name: kwargs[name] for name in kwargnames if name in kwargs}
    return function(*args, **given) if given else function(*args)


def _run_wrapped(plan: Plan, kwargs: Mapping[str, Any]) -> Any:
    """pluggy's loop (``_multicall``) for a plan with new-style wrappers (or
    implementations with arguments that have a default)."""
    results: list[Any] = []
    exception: BaseException | None = None
    teardowns: list[Generator[None, Any, Any]] = []
    try:
        for call in plan.calls:
            if call[3]:
                teardown = _invoke(call, kwargs)
                try:
                    next(teardown)
                except StopIteration:
                    _wrap_fail(teardown, "did not yield")
                teardowns.append(teardown)
            else:
                result = _invoke(call, kwargs)
                if result is not None:
                    results.append(result)
                    if plan.firstresult:
                        break
    except BaseException as exc:
        exception = exc
    finally:
        outcome: Any = (results[0] if results else None) if plan.firstresult else results
        for teardown in reversed(teardowns):
            try:
                if exception is not None:
                    try:
                        teardown.throw(exception)
                    except RuntimeError as err:
                        # A StopIteration thrown into a generator comes back as RuntimeError.
                        if isinstance(exception, StopIteration) and err.__cause__ is exception:
                            teardown.close()
                            continue
                        raise
                else:
                    teardown.send(outcome)
                teardown.close()
            except StopIteration as stop:
                outcome = stop.value
                exception = None
                continue
            except BaseException as exc:
                exception = exc
                continue
            _wrap_fail(teardown, "has second yield")
    if exception is not None:
        raise exception
    return outcome


def _wrap_fail(teardown: Generator[None, Any, Any], what: str) -> None:
    """pluggy's error for a wrapper that does not yield exactly once."""
    code = cast(types.GeneratorType, teardown).gi_code
    raise RuntimeError(
        f"wrap_controller at {code.co_name!r} {code.co_filename}:{code.co_firstlineno} {what}"
    )
