"""The plugin manager: builtins, the disable list, hook validation, isolation, refusals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pluggy
import pytest
from flask import Flask

from proxy.call.alerts import Alert
from proxy.call.context import CallContext, Refusal, Usage
from proxy.config import build_config
from proxy.hookspecs import hookimpl
from proxy.plugins import BUILTIN_PLUGINS, make_plugin_manager
from proxy.storage.counters import proxy_total
from proxy.storage.models import Customer, SpendLog
from tests.conftest import MASTER, base_config

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello"}]}


def test_every_builtin_is_registered_under_its_name() -> None:
    pm = make_plugin_manager(build_config({"general_settings": {"master_key": "sk-x"}}))
    for name in BUILTIN_PLUGINS:
        assert pm.has_plugin(name), name
    assert getattr(pm.get_plugin("rate_limiter"), "__name__", None) == "plugins.rate_limiter.hooks"


def test_disabled_plugins_are_not_registered() -> None:
    config = build_config({"plugins": {"disable": ["rate_limiter", "key_budget"]}})
    pm = make_plugin_manager(config)
    assert not pm.has_plugin("rate_limiter")
    assert not pm.has_plugin("key_budget")
    assert pm.has_plugin("user_budget")


def test_disabling_an_unknown_name_warns(caplog: pytest.LogCaptureFixture) -> None:
    config = build_config({"plugins": {"disable": ["rate_limitr"]}})
    with caplog.at_level(logging.WARNING, logger="comptroller.plugins"):
        pm = make_plugin_manager(config)
    assert "'rate_limitr', which is not an installed plugin" in caplog.text
    assert pm.has_plugin("rate_limiter")


def test_extra_plugins_can_be_disabled_by_name() -> None:
    class Extra:
        @hookimpl
        def pre_request_check(self, ctx: CallContext) -> None:
            return None

    config = build_config({"plugins": {"disable": ["extra"]}})
    assert not make_plugin_manager(config, [("extra", Extra())]).has_plugin("extra")
    assert make_plugin_manager(build_config(None), [("extra", Extra())]).has_plugin("extra")


class Misspelled:
    @hookimpl
    def pre_request_chek(self, ctx: CallContext) -> None:  # the typo is the point
        return None


def test_misspelled_hook_is_a_start_up_error() -> None:
    with pytest.raises(pluggy.PluginValidationError, match="pre_request_chek"):
        make_plugin_manager(build_config(None), [("typo", Misspelled())])


def test_misspelled_hook_stops_create_app(make_app: Callable[..., Flask], db_url: str) -> None:
    with pytest.raises(pluggy.PluginValidationError, match="pre_request_chek"):
        make_app(base_config(db_url), plugins=[("typo", Misspelled())])


def test_wrong_hook_argument_is_a_start_up_error() -> None:
    class WrongArgs:
        @hookimpl
        def pre_request_check(self, context: CallContext) -> None:
            return None

    with pytest.raises(pluggy.PluginValidationError):
        make_plugin_manager(build_config(None), [("wrong", WrongArgs())])


# --- behaviour through real calls (SQLite and Postgres) ---------------------


class Recorder:
    """Records the outcome it sees in ``call_finished``."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []
        self.asked = 0

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> None:
        self.asked += 1
        return None

    @hookimpl
    def call_finished(self, ctx: CallContext, outcome: str) -> None:
        self.outcomes.append(outcome)


class Refuser:
    def __init__(self, message: str, status: int = 403) -> None:
        self.message = message
        self.status = status

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> Refusal:
        return Refusal(status=self.status, message=self.message, type="auth_error",
                       headers={"x-refused-by": self.message})  # fmt: skip


class Exploding:
    def __init__(self, hook: str) -> None:
        self.hook = hook

    @hookimpl
    def call_finished(self, ctx: CallContext, outcome: str) -> None:
        if self.hook == "call_finished":
            raise RuntimeError("plugin bug in call_finished")

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        if self.hook == "on_alert":
            raise RuntimeError("plugin bug in on_alert")

    @hookimpl
    def pre_request_check(self, ctx: CallContext) -> None:
        if self.hook == "pre_request_check":
            raise RuntimeError("plugin bug in pre_request_check")


def test_a_refusal_answers_with_its_status_message_and_headers(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    recorder = Recorder()
    app = make_app(base_config(db_url), plugins=[("recorder", recorder), ("no", Refuser("no way"))])
    resp = app.test_client().post("/chat/completions", json=CHAT, headers=MASTER)
    assert resp.status_code == 403
    assert resp.get_json() == {
        "error": {"message": "no way", "type": "auth_error", "param": "None", "code": "403"}
    }
    assert resp.headers["x-refused-by"] == "no way"
    # pluggy calls the last registered first: the refusal stops the chain before recorder.
    assert recorder.asked == 0
    assert recorder.outcomes == ["refused"]
    assert SpendLog.select().count() == 0
    assert proxy_total() == 0


def test_first_refusal_wins(make_app: Callable[..., Flask], db_url: str) -> None:
    app = make_app(
        base_config(db_url),
        plugins=[("second", Refuser("second says no", 429)), ("first", Refuser("first says no"))],
    )
    resp = app.test_client().post("/chat/completions", json=CHAT, headers=MASTER)
    assert resp.status_code == 403
    assert resp.get_json()["error"]["message"] == "first says no"


def test_a_failing_call_finished_does_not_stop_the_others(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    before, after = Recorder(), Recorder()
    app = make_app(
        base_config(db_url),
        plugins=[("before", before), ("boom", Exploding("call_finished")), ("after", after)],
    )
    resp = app.test_client().post("/chat/completions", json=CHAT, headers=MASTER)
    assert resp.status_code == 200
    assert before.outcomes == ["success"]
    assert after.outcomes == ["success"]
    assert SpendLog.select().count() == 1


class AlertRaiser:
    """Raises one alert per metered call from inside the spend transaction."""

    @hookimpl
    def post_call_spend(self, ctx: CallContext, usage: Usage, cost: float) -> None:
        ctx.alerts.append(
            Alert(spend=cost, event="spend_tracked", event_group="proxy", event_message="x")
        )


class AlertCollector:
    def __init__(self) -> None:
        self.alerts: list[Alert] = []

    @hookimpl
    def on_alert(self, alert: Alert) -> None:
        self.alerts.append(alert)


def test_a_failing_on_alert_does_not_stop_the_others_nor_the_spend(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    first, last = AlertCollector(), AlertCollector()
    app = make_app(
        base_config(db_url),
        plugins=[
            ("raiser", AlertRaiser()),
            ("first", first),
            ("boom", Exploding("on_alert")),
            ("last", last),
        ],
    )
    body = {**CHAT, "user": "alice"}
    resp = app.test_client().post("/chat/completions", json=body, headers=MASTER)
    assert resp.status_code == 200
    assert [a.event for a in first.alerts] == ["spend_tracked"]
    assert [a.event for a in last.alerts] == ["spend_tracked"]
    row = SpendLog.get()
    assert row.spend > 0
    assert Customer.get_by_id("alice").spend == pytest.approx(row.spend)
    assert proxy_total() == pytest.approx(row.spend)


def test_a_crashing_check_answers_500_without_a_trace_and_still_finishes_the_call(
    make_app: Callable[..., Flask], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder()
    # "recorder" is registered last, so pluggy asks it first; then the check crashes.
    app = make_app(
        base_config(db_url),
        plugins=[("boom", Exploding("pre_request_check")), ("recorder", recorder)],
    )
    resp = app.test_client().post("/chat/completions", json=CHAT, headers=MASTER)
    assert resp.status_code == 500
    error = resp.get_json()["error"]
    assert error["type"] == "api_error"
    assert "Traceback" not in resp.get_data(as_text=True)
    assert "plugin bug" not in error["message"]
    assert recorder.asked == 1
    # What an earlier check took is given back even though a later one crashed.
    assert recorder.outcomes == ["failed"]
    assert SpendLog.select().count() == 0


def test_plugin_startup_and_tables_are_called(make_app: Callable[..., Flask], db_url: str) -> None:
    seen: dict[str, Any] = {}

    class Starter:
        @hookimpl
        def plugin_startup(self, app: Flask, config: Any) -> None:
            seen["app"] = app
            seen["settings"] = config.plugin_settings("starter")

    config = base_config(db_url, plugins={"settings": {"starter": {"level": 3}}})
    app = make_app(config, plugins=[("starter", Starter())])
    assert seen == {"app": app, "settings": {"level": 3}}


class CountsSpend:
    """Counts its post_call_spend calls; raises in them when told to."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    @hookimpl
    def post_call_spend(self, ctx: CallContext, usage: Usage, cost: float) -> None:
        self.calls += 1
        ctx.alerts.append(
            Alert(spend=cost, event="spend_tracked", event_group="proxy", event_message="x")
        )
        if self.fail:
            raise RuntimeError("plugin bug in post_call_spend")


def test_a_failing_post_call_spend_runs_no_hook_twice_and_the_call_is_billed_once(
    make_app: Callable[..., Flask], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    counter, failing, collector = CountsSpend(), CountsSpend(fail=True), AlertCollector()
    app = make_app(
        base_config(db_url),
        plugins=[("counter", counter), ("collector", collector), ("failing", failing)],
    )
    body = {**CHAT, "user": "alice"}
    resp = app.test_client().post("/chat/completions", json=body, headers=MASTER)
    assert resp.status_code == 200
    assert (counter.calls, failing.calls) == (0, 1)  # the raise stopped pluggy's chain
    assert collector.alerts == []  # the plugins' part was rolled back, alerts too
    assert "recording the spend without it" in caplog.text
    row = SpendLog.get()
    assert SpendLog.select().count() == 1
    assert Customer.get_by_id("alice").spend == pytest.approx(row.spend)
    assert proxy_total() == pytest.approx(row.spend)


def test_every_on_alert_and_call_finished_call_goes_through_pluggy(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    first, last = AlertCollector(), AlertCollector()
    app = make_app(
        base_config(db_url),
        plugins=[("raiser", AlertRaiser()), ("first", first), ("last", last)],
    )
    pm = app.extensions["comptroller"].pm
    seen: list[tuple[str, list[str]]] = []

    def before(name: str, impls: list[Any], kwargs: dict[str, Any]) -> None:
        seen.append((name, [impl.plugin_name for impl in impls]))

    undo = pm.add_hookcall_monitoring(before, lambda *args: None)
    try:
        resp = app.test_client().post("/chat/completions", json=CHAT, headers=MASTER)
    finally:
        undo()
    assert resp.status_code == 200
    assert [a.event for a in first.alerts] == [a.event for a in last.alerts] == ["spend_tracked"]
    # One call per plugin, each seen by pluggy's monitoring: last registered first.
    assert ("on_alert", ["last"]) in seen and ("on_alert", ["first"]) in seen
    alerts = [impls for name, impls in seen if name == "on_alert"]
    assert alerts.index(["last"]) < alerts.index(["first"])
    assert all(len(impls) == 1 for name, impls in seen if name == "call_finished")
    assert sum(name == "post_call_spend" for name, _ in seen) == 1
