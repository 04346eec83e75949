"""CORS (general_settings.allowed_origins): off by default, on for the listed origins only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from proxy.config import ConfigError, build_config
from tests.conftest import MASTER, base_config

APP_ORIGIN = "https://app.example.com"
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization, content-type",
}


def _client(make_app: Callable[..., Flask], db_url: str, **settings: Any) -> FlaskClient:
    return make_app(base_config(db_url, general_settings=settings)).test_client()


def test_without_allowed_origins_there_is_no_cors(make_app, db_url):
    client = _client(make_app, db_url)
    preflight = client.options("/chat/completions", headers={"Origin": APP_ORIGIN, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    call = client.post("/chat/completions", json=CHAT, headers={**MASTER, "Origin": APP_ORIGIN})
    assert call.status_code == 200
    assert not [name for name in call.headers.keys() if name.startswith("Access-Control")]


def test_a_listed_origin_passes_the_preflight_without_a_key(make_app, db_url):
    client = _client(make_app, db_url, allowed_origins=[APP_ORIGIN])
    for path in ("/chat/completions", "/key/generate"):  # the admin route needs a key otherwise
        resp = client.options(path, headers={"Origin": APP_ORIGIN, **PREFLIGHT})
        assert resp.status_code == 204
        assert resp.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
        assert "POST" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        assert "Access-Control-Allow-Credentials" not in resp.headers
        assert "Origin" in resp.headers["Vary"]


def test_a_listed_origin_can_read_answers_errors_and_rate_limit_headers(make_app, db_url):
    client = _client(make_app, db_url, allowed_origins=[APP_ORIGIN + "/"])
    call = client.post("/chat/completions", json=CHAT, headers={**MASTER, "Origin": APP_ORIGIN})
    assert call.status_code == 200
    assert call.headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "x-ratelimit-remaining-requests" in call.headers["Access-Control-Expose-Headers"]
    refused = client.post("/chat/completions", json=CHAT, headers={"Origin": APP_ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == APP_ORIGIN


def test_another_origin_gets_no_cors_headers(make_app, db_url):
    client = _client(make_app, db_url, allowed_origins=[APP_ORIGIN])
    evil = "https://evil.example.net"
    preflight = client.options("/chat/completions", headers={"Origin": evil, **PREFLIGHT})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    call = client.post("/chat/completions", json=CHAT, headers={**MASTER, "Origin": evil})
    assert "Access-Control-Allow-Origin" not in call.headers


def test_a_star_allows_any_origin(make_app, db_url):
    client = _client(make_app, db_url, allowed_origins=["*"])
    resp = client.options("/v1/models", headers={"Origin": "http://localhost:3000", **PREFLIGHT})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("origin", ["app.example.com", "https://app.example.com/path", ""])
def test_an_allowed_origin_that_is_not_an_origin_stops_start_up(origin):
    with pytest.raises(ConfigError, match="allowed_origins"):
        build_config({"general_settings": {"allowed_origins": [origin]}})
