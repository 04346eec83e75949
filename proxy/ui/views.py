"""The admin UI's pages: login, logout and one page per tab.

Pages are rendered here; everything they change or list goes through the
admin API from the page's script (``static/ui.js``), so the rules live in
one place (:mod:`proxy.api.admin`) and the UI shows the API's own errors.
"""

from __future__ import annotations

from typing import cast

from flask import (
    Blueprint,
    Flask,
    Response,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from proxy.api.common import services
from proxy.call.auth import is_master_key
from proxy.storage.customer_budgets import OWN_BUDGET_PREFIX
from proxy.ui import session as ui_session

bp = Blueprint(
    "ui",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

TABS = (
    ("budgets", "Budgets"),
    ("customers", "Customers"),
    ("keys", "Keys"),
    ("users", "Users"),
    ("teams", "Teams"),
    ("spend", "Spend"),
    ("logs", "Logs"),
)
_PUBLIC_ENDPOINTS = {"ui.login", "ui.static", "ui.favicon"}
_CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@bp.record_once
def _install_session(state: BlueprintSetupState) -> None:
    app = cast(Flask, state.app)
    ui_session.install(app, app.extensions["comptroller"].config.master_key)
    # Browsers ask for /favicon.ico on any page (the docs too): answer with the UI's icon.
    app.add_url_rule("/favicon.ico", endpoint="ui.favicon", view_func=_favicon)


def _favicon() -> ResponseReturnValue:
    return send_from_directory(
        cast(str, bp.static_folder), "favicon.svg", mimetype="image/svg+xml", max_age=86400
    )


@bp.before_request
def _login_required() -> ResponseReturnValue | None:
    if request.endpoint in _PUBLIC_ENDPOINTS or ui_session.logged_in():
        return None
    return redirect(url_for("ui.login", next=request.path))


@bp.after_request
def _page_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "ui.static":
        response.headers["Cache-Control"] = "no-store"
    return response


def _safe_next(target: str | None) -> str:
    """Only a UI page of this server: never an open redirect."""
    if target and target.startswith("/ui/") and not target.startswith("/ui/login"):
        if "//" not in target and "\\" not in target:
            return target
    return url_for("ui.tab", name="budgets")


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    target = _safe_next(request.values.get("next"))
    if request.method == "GET":
        if ui_session.logged_in():
            return redirect(target)
        return render_template("ui/login.html", next=target, error=None)
    presented = request.form.get("master_key", "")
    if presented and is_master_key(presented, services().config.master_key):
        ui_session.start_session()
        return redirect(target, code=303)
    error = "That is not the master key." if presented else "Enter the master key."
    return render_template("ui/login.html", next=target, error=error), 401


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if ui_session.csrf_matches(request.form.get("csrf_token")):
        ui_session.end_session()
    return redirect(url_for("ui.login"), code=303)


@bp.get("")
@bp.get("/")
def home() -> ResponseReturnValue:
    return redirect(url_for("ui.tab", name="budgets"))


@bp.get("/<name>")
def tab(name: str) -> ResponseReturnValue:
    if name not in dict(TABS):
        return not_found()
    return render_template(
        f"ui/{name}.html",
        tabs=TABS,
        active=name,
        csrf_token=ui_session.csrf_token(),
        own_budget_prefix=OWN_BUDGET_PREFIX,
        default_budget_id=services().config.litellm_settings.max_end_user_budget_id,
    )


@bp.get("/<path:unknown>")
def not_found(unknown: str = "") -> ResponseReturnValue:
    """The UI's own 404 page for any other path under /ui (the API answers JSON)."""
    page = render_template(
        "ui/not_found.html",
        tabs=TABS,
        active=None,
        csrf_token=ui_session.csrf_token(),
        path=request.path,
    )
    return page, 404
