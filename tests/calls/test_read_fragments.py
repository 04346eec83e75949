"""A plugin's statement inside the call's one read (``call_read_fragment``): what
it sees, what it gets back, and the undo for a call refused before it took it."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.plugin_api import ReadFragment, hookimpl
from proxy.storage.db import database
from proxy.storage.models import Key
from tests.conftest import base_config
from tests.support.rate_limits import chat, make_key

NO_LIMITS = {"disable": ["rate_limiter", "webhook_alerter"]}


class Peek:
    """A third-party plugin reading the key's alias and its own parameter in the read."""

    def __init__(self, takes: bool) -> None:
        self.takes = takes
        self.seen: list[Any] = []
        self.undone: list[tuple[str, Any]] = []

    @hookimpl
    def call_read_fragment(self, config: Any) -> ReadFragment:
        return ReadFragment(
            name="peek",
            ctes='peek_rows AS (SELECT r."k.key_alias" AS alias, r.caller, '
            "%s::text AS model FROM call_read r)",
            result="peek_rows",
            params=lambda read: [read.model_group],
            undo=lambda read, rows: self.undone.append((read.request_id, rows)),
        )

    @hookimpl
    def pre_request_check(self, ctx: Any) -> None:
        if self.takes:
            self.seen.append((ctx.request_id, ctx.read_results.pop("peek", None)))


def _app(make_app: Any, db_url: str, peek: Peek) -> Any:
    return make_app(base_config(db_url, plugins=NO_LIMITS), plugins=[("peek", peek)])


def test_a_plugin_gets_its_fragments_rows_from_the_calls_read(make_app, db_url):
    peek = Peek(takes=True)
    client = _app(make_app, db_url, peek).test_client()
    plain = make_key(alias="peeked")
    resp = chat(client, plain)
    assert resp.status_code == 200
    if not db_url.startswith("postgres"):
        assert peek.seen == [(resp.headers["x-comptroller-call-id"], None)]  # no fragment
        return
    expected = [{"alias": "peeked", "caller": "key", "model": "gpt-3.5-turbo"}]
    assert peek.seen == [(resp.headers["x-comptroller-call-id"], expected)]
    assert peek.undone == []


def test_rows_nobody_took_are_given_back_when_the_call_ends(make_app, db_url):
    if not db_url.startswith("postgres"):
        pytest.skip("read fragments run on PostgreSQL")
    peek = Peek(takes=False)
    client = _app(make_app, db_url, peek).test_client()
    plain = make_key(alias="left")
    resp = chat(client, plain)
    assert resp.status_code == 200
    assert peek.undone == [
        (
            resp.headers["x-comptroller-call-id"],
            [{"alias": "left", "caller": "key", "model": "gpt-3.5-turbo"}],
        )
    ]
    # Refused by authentication after the read (a blocked key): given back too.
    with database.connection_context():
        Key.update(blocked=True).execute()
    assert chat(client, plain).status_code == 401
    assert len(peek.undone) == 2 and peek.undone[1][1][0]["alias"] == "left"
    # An unknown key: the read ran, nobody is calling (``caller`` is NULL).
    assert chat(client, "sk-unknown").status_code == 401
    assert peek.undone[2][1] == [{"alias": None, "caller": None, "model": "gpt-3.5-turbo"}]
