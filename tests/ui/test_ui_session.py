"""The admin UI's login session and its CSRF rule, on SQLite and PostgreSQL.

The browser tests drive the same flows in Chromium; these pin the details a
browser hides: cookie flags, which routes accept the session, what a forged
request gets.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.call.auth import generate_key, hash_key
from proxy.storage.db import database
from proxy.storage.models import Budget, Key
from tests.conftest import MASTER_KEY, base_config


def _log_in(client: FlaskClient, key: str = MASTER_KEY, **extra: str) -> Any:
    return client.post("/ui/login", data={"master_key": key, **extra})


def _csrf(client: FlaskClient) -> str:
    page = client.get("/ui/budgets").get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "the page carries no CSRF token"
    return match.group(1)


def _set_cookie(resp: Any) -> str:
    cookies = [v for k, v in resp.headers.items() if k == "Set-Cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0]


def test_login_sets_a_strict_httponly_session_cookie(client: FlaskClient) -> None:
    resp = _log_in(client, next="/ui/customers")
    assert resp.status_code == 303
    assert resp.headers["Location"] == "/ui/customers"
    cookie = _set_cookie(resp)
    assert cookie.startswith("comptroller_ui=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain http: a Secure cookie would never come back
    assert MASTER_KEY not in cookie


def test_session_cookie_is_secure_over_https(app: Flask) -> None:
    direct = app.test_client().post(
        "/ui/login", data={"master_key": MASTER_KEY}, base_url="https://proxy.example"
    )
    behind_tls_proxy = app.test_client().post(
        "/ui/login", data={"master_key": MASTER_KEY}, headers={"X-Forwarded-Proto": "https"}
    )
    assert "Secure" in _set_cookie(direct)
    assert "Secure" in _set_cookie(behind_tls_proxy)


def test_wrong_master_key_is_refused_without_a_session(client: FlaskClient) -> None:
    resp = _log_in(client, "sk-12345")
    assert resp.status_code == 401
    assert "That is not the master key." in resp.get_data(as_text=True)
    assert "Set-Cookie" not in resp.headers
    assert client.get("/ui/budgets").status_code == 302


def test_pages_without_a_session_redirect_to_login(client: FlaskClient) -> None:
    for path in ("/ui", "/ui/", "/ui/budgets", "/ui/customers", "/ui/keys", "/ui/spend"):
        resp = client.get(path, follow_redirects=False)
        assert resp.status_code in (302, 308), path
        target = client.get(path, follow_redirects=True)
        assert target.request.path == "/ui/login", path
    assert client.get("/ui/spend").headers["Location"] == "/ui/login?next=/ui/spend"


def test_session_alone_is_refused_by_the_admin_api(client: FlaskClient) -> None:
    _log_in(client)
    token = _csrf(client)
    body = {"budget_id": "forged", "max_budget": 1}

    no_header = client.post("/budget/new", json=body)
    wrong_header = client.post("/budget/new", json=body, headers={"X-CSRF-Token": "x" + token})
    report = client.get("/global/spend/daily")
    assert no_header.status_code == 401 and wrong_header.status_code == 401
    assert report.status_code == 401
    assert "X-CSRF-Token" in no_header.get_json()["error"]["message"]
    with database.connection_context():
        assert Budget.get_or_none(Budget.budget_id == "forged") is None

    made = client.post("/budget/new", json=body, headers={"X-CSRF-Token": token})
    assert made.status_code == 200
    with database.connection_context():
        assert Budget.get_by_id("forged").max_budget == 1.0
    assert client.get("/global/spend/daily", headers={"X-CSRF-Token": token}).status_code == 200


def test_csrf_header_without_a_session_is_refused(client: FlaskClient) -> None:
    logged_in = _log_in(client)
    token = _csrf(client)
    stranger = client.application.test_client()
    resp = stranger.post("/budget/new", json={"budget_id": "x"}, headers={"X-CSRF-Token": token})
    assert logged_in.status_code == 303
    assert resp.status_code == 401
    assert "No api key passed in" in resp.get_json()["error"]["message"]


def test_session_never_authorises_llm_routes(client: FlaskClient) -> None:
    _log_in(client)
    token = _csrf(client)
    resp = client.post(
        "/chat/completions",
        json={"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]},
        headers={"X-CSRF-Token": token},
    )
    assert resp.status_code == 401
    assert client.get("/v1/models", headers={"X-CSRF-Token": token}).status_code == 401


def test_virtual_key_still_gets_403_on_admin_routes_when_logged_in(client: FlaskClient) -> None:
    plain = generate_key()
    with database.connection_context():
        Key.create(token=hash_key(plain), key_name="sk-...test")
    _log_in(client)
    token = _csrf(client)
    resp = client.get(
        "/budget/list", headers={"Authorization": f"Bearer {plain}", "X-CSRF-Token": token}
    )
    assert resp.status_code == 403


def test_a_session_holds_on_every_worker_with_the_same_master_key(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    first, second = make_app(), make_app()
    browser = first.test_client()
    _log_in(browser)
    token = _csrf(browser)
    cookie = browser.get_cookie("comptroller_ui")
    assert cookie is not None

    other_worker = second.test_client()
    other_worker.set_cookie("comptroller_ui", cookie.value)
    assert other_worker.get("/budget/list", headers={"X-CSRF-Token": token}).status_code == 200

    rotated = make_app(base_config(db_url, general_settings={"master_key": "sk-rotated"}))
    after_rotation = rotated.test_client()
    after_rotation.set_cookie("comptroller_ui", cookie.value)
    assert after_rotation.get("/budget/list", headers={"X-CSRF-Token": token}).status_code == 401
    assert after_rotation.get("/ui/budgets").status_code == 302


def test_logout_needs_the_csrf_token_and_ends_the_session(client: FlaskClient) -> None:
    _log_in(client)
    token = _csrf(client)
    forged = client.post("/ui/logout", data={})
    assert forged.status_code == 303
    assert client.get("/ui/budgets").status_code == 200

    resp = client.post("/ui/logout", data={"csrf_token": token})
    assert resp.status_code == 303 and resp.headers["Location"] == "/ui/login"
    assert client.get("/ui/budgets").status_code == 302
    assert client.get("/budget/list", headers={"X-CSRF-Token": token}).status_code == 401


def test_login_never_redirects_off_the_ui(client: FlaskClient) -> None:
    for target in ("//evil.example/ui/", "https://evil.example/", "/budget/list", "/ui/login"):
        resp = client.post("/ui/login", data={"master_key": MASTER_KEY, "next": target})
        assert resp.headers["Location"] == "/ui/budgets", target


def test_pages_forbid_inline_scripts_framing_and_caching(client: FlaskClient) -> None:
    _log_in(client)
    resp = client.get("/ui/keys")
    policy = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert resp.headers["Cache-Control"] == "no-store"
    assert "<script>" not in resp.get_data(as_text=True)


def test_assets_ship_with_the_package_and_need_no_login(client: FlaskClient) -> None:
    for asset in ("ui.css", "ui.js", "budgets.js", "customers.js", "keys.js", "spend.js"):
        resp = client.get(f"/ui/static/{asset}")
        assert resp.status_code == 200, asset
        assert b"https://" not in resp.data, f"{asset} loads something from another site"
        resp.close()


@pytest.mark.parametrize("path", ["/ui/settings", "/ui/keys/extra", "/ui/a/b/c"])
def test_unknown_ui_page_answers_the_ui_404_page(client: FlaskClient, path: str) -> None:
    _log_in(client)
    resp = client.get(path)
    assert resp.status_code == 404
    assert resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "Page not found" in page and 'href="/ui/keys"' in page


def test_unknown_ui_page_without_a_session_goes_to_login(client: FlaskClient) -> None:
    resp = client.get("/ui/settings")
    assert resp.status_code == 302 and "/ui/login" in resp.headers["Location"]


def test_api_404_stays_json(client: FlaskClient) -> None:
    assert client.get("/no/such/route").get_json()["error"]["type"] == "not_found_error"


def test_favicon_is_served_without_a_session(client: FlaskClient) -> None:
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200 and resp.mimetype == "image/svg+xml"
    assert resp.data.startswith(b"<svg")
    resp.close()
