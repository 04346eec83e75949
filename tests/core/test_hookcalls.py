"""proxy.hookcalls answers every hook call as pluggy does: the same
implementations in the same order, the same results, the same exceptions;
and it hands the call to pluggy when pluggy must see it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

import pluggy
import pytest

from proxy import hookcalls
from proxy.plugins import call_each

spec = pluggy.HookspecMarker("t")
impl = pluggy.HookimplMarker("t")


class Spec:
    @spec(firstresult=True)
    def check(self, ctx: Any) -> Any:
        """First result wins."""

    @spec
    def collect(self, ctx: Any, extra: Any) -> Any:
        """Every result."""

    @spec
    def finished(self, ctx: Any, outcome: Any) -> None:
        """Each plugin on its own (call_each)."""


def plugin(name: str, answer: Any = None, fail: bool = False, **opts: Any) -> Any:
    """A plugin that logs its calls in ``ctx`` and answers ``answer``."""

    class Plugin:
        @impl(**opts)
        def check(self, ctx: list[str]) -> Any:
            ctx.append(f"{name}.check")
            if fail:
                raise ValueError(name)
            return answer

        @impl(**opts)
        def collect(self, ctx: list[str], extra: int) -> Any:
            ctx.append(f"{name}.collect")
            if fail:
                raise ValueError(name)
            return None if answer is None else (answer, extra)

        @impl(**opts)
        def finished(self, ctx: list[str], outcome: str) -> None:
            ctx.append(f"{name}.finished:{outcome}")
            if fail:
                raise ValueError(name)

    Plugin.__name__ = name
    return Plugin()


def wrapper(name: str, replace: Any = None, swallow: bool = False) -> Any:
    class Wrapper:
        @impl(wrapper=True)
        def check(self, ctx: list[str]) -> Generator[None, Any, Any]:
            ctx.append(f"{name}.before")
            try:
                result = yield
            except ValueError as err:
                ctx.append(f"{name}.saw:{err}")
                if swallow:
                    return "swallowed"
                raise
            ctx.append(f"{name}.after:{result}")
            return result if replace is None else replace

    return Wrapper()


def with_default() -> Any:
    class Defaults:
        @impl
        def collect(self, ctx: list[str], extra: int, unknown: int = 7) -> Any:
            ctx.append(f"defaults.collect:{unknown}")
            return extra

    return Defaults()


def managers(
    plugins: list[tuple[str, Any]],
) -> tuple[pluggy.PluginManager, hookcalls.PluginManager]:
    plain, fast = pluggy.PluginManager("t"), hookcalls.PluginManager("t")
    for pm in (plain, fast):
        pm.add_hookspecs(Spec)
        for name, plug in plugins:
            pm.register(plug, name=name)
    return plain, fast


def outcome(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    try:
        return call(*args, **kwargs), None
    except Exception as err:  # compared below, never swallowed silently
        return None, f"{type(err).__name__}: {err}"


SETS: dict[str, list[tuple[str, Any]]] = {
    "nothing": [],
    "plain, first answers": [("a", plugin("a")), ("b", plugin("b", "B")), ("c", plugin("c", "C"))],
    "none answers": [("a", plugin("a")), ("b", plugin("b"))],
    "tryfirst and trylast": [
        ("a", plugin("a", "A", tryfirst=True)),
        ("b", plugin("b", "B")),
        ("c", plugin("c", "C", trylast=True)),
    ],
    "one raises": [("a", plugin("a", fail=True)), ("b", plugin("b", "B")), ("c", plugin("c"))],
    "a wrapper around": [("w", wrapper("w")), ("a", plugin("a")), ("b", plugin("b", "B"))],
    "a wrapper that replaces": [("w", wrapper("w", replace="W")), ("a", plugin("a", "A"))],
    "a wrapper sees the raise": [("w", wrapper("w")), ("a", plugin("a", fail=True))],
    "a wrapper swallows it": [("w", wrapper("w", swallow=True)), ("a", plugin("a", fail=True))],
    "two wrappers": [
        ("w1", wrapper("w1", replace="W1")),
        ("w2", wrapper("w2")),
        ("a", plugin("a", "A")),
    ],
    "defaults": [("a", plugin("a", "A")), ("d", with_default())],
}


@pytest.mark.parametrize("hook", ["check", "collect"])
@pytest.mark.parametrize("name", list(SETS))
def test_a_hook_call_is_answered_as_pluggy_answers_it(name: str, hook: str) -> None:
    plain, fast = managers(SETS[name])
    kwargs = {"extra": 3} if hook == "collect" else {}
    seen_plain: list[str] = []
    seen_fast: list[str] = []
    expected = outcome(getattr(plain.hook, hook), ctx=seen_plain, **kwargs)
    got = outcome(hookcalls.call_hook, fast, hook, ctx=seen_fast, **kwargs)
    assert got == expected
    assert seen_fast == seen_plain
    assert hookcalls.plan(fast, hook) is not None


def test_call_each_runs_every_plugin_alone_in_pluggys_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugins = [("a", plugin("a")), ("b", plugin("b", fail=True)), ("c", plugin("c", tryfirst=True))]
    plain, fast = managers(plugins)
    seen_plain: list[str] = []
    seen_fast: list[str] = []
    call_each(plain, "finished", ctx=seen_plain, outcome="success")
    with caplog.at_level(logging.ERROR, logger="comptroller.plugins"):
        call_each(fast, "finished", ctx=seen_fast, outcome="success")
    assert (
        seen_fast
        == seen_plain
        == ["c.finished:success", "b.finished:success", "a.finished:success"]
    )
    assert "finished of plugin b failed" in caplog.text


def test_a_plugin_registered_later_is_called() -> None:
    _, fast = managers([("a", plugin("a"))])
    seen: list[str] = []
    hookcalls.call_hook(fast, "check", ctx=seen)
    fast.register(plugin("b", "B"), name="b")
    assert hookcalls.call_hook(fast, "check", ctx=seen) == "B"
    fast.unregister(name="b")
    assert hookcalls.call_hook(fast, "check", ctx=seen) is None
    assert seen == ["a.check", "b.check", "a.check"]


def test_a_missing_argument_is_pluggys_error() -> None:
    _, fast = managers([("a", plugin("a"))])
    with pytest.warns(UserWarning, match="'extra'"), pytest.raises(pluggy.HookCallError):
        hookcalls.call_hook(fast, "collect", ctx=[])


def test_an_old_style_hookwrapper_goes_through_pluggy() -> None:
    class Old:
        @impl(hookwrapper=True)
        def check(self, ctx: list[str]) -> Generator[None, Any, None]:
            result = yield
            ctx.append(f"old saw {result.get_result()}")

    _, fast = managers([("old", Old()), ("a", plugin("a", "A"))])
    seen: list[str] = []
    assert hookcalls.call_hook(fast, "check", ctx=seen) == "A"
    assert seen == ["a.check", "old saw A"]
    assert hookcalls.plan(fast, "check") is None


def test_while_pluggy_is_watched_every_call_goes_through_it() -> None:
    _, fast = managers([("a", plugin("a")), ("b", plugin("b"))])
    watched: list[tuple[str, list[str]]] = []
    undo = fast.add_hookcall_monitoring(
        lambda name, impls, kwargs: watched.append((name, [i.plugin_name for i in impls])),
        lambda *args: None,
    )
    hookcalls.call_hook(fast, "check", ctx=[])
    call_each(fast, "finished", ctx=[], outcome="success")
    undo()
    undo()  # twice is harmless
    hookcalls.call_hook(fast, "check", ctx=[])
    assert watched == [("check", ["a", "b"]), ("finished", ["b"]), ("finished", ["a"])]
    assert fast.watchers == 0
    undo_tracing = fast.enable_tracing()
    assert hookcalls.plan(fast, "check") is None
    undo_tracing()
    assert hookcalls.plan(fast, "check") is not None
