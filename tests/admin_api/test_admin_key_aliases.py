"""/key/delete by ``key_aliases``, as LiteLLM's admin API takes them."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from proxy.storage.models import Key
from tests.conftest import MASTER
from tests.support.assertions import assert_error


def key(client: FlaskClient, alias: str | None) -> str:
    body: dict[str, Any] = {} if alias is None else {"key_alias": alias}
    answer = client.post("/key/generate", json=body, headers=MASTER)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return str(answer.get_json()["key"])


def aliases_left() -> list[str]:
    return sorted(row.key_alias or "" for row in Key.select())


def delete(client: FlaskClient, body: dict[str, Any]) -> Any:
    return client.post("/key/delete", json=body, headers=MASTER)


def test_every_key_with_the_alias_goes_and_only_those(client: FlaskClient) -> None:
    key(client, "ci-bot")
    key(client, "ci-bot")
    kept = key(client, "billing")
    answer = delete(client, {"key_aliases": ["ci-bot"]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"deleted_keys": ["ci-bot"]}
    assert aliases_left() == ["billing"]
    chat = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
    call = client.post("/chat/completions", json=chat, headers={"Authorization": f"Bearer {kept}"})
    assert call.status_code == 200


def test_keys_and_aliases_together(client: FlaskClient) -> None:
    plain = key(client, None)
    key(client, "old-app")
    key(client, "new-app")
    answer = delete(client, {"keys": [plain], "key_aliases": ["old-app"]})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json() == {"deleted_keys": [plain, "old-app"]}
    assert aliases_left() == ["new-app"]


def test_an_unknown_alias_deletes_nothing(client: FlaskClient) -> None:
    plain = key(client, "real")
    error = assert_error(delete(client, {"keys": [plain], "key_aliases": ["real", "ghost"]}), 404)
    assert error["param"] == "key_aliases"
    assert error["message"] == "No key has the alias: ghost"
    assert aliases_left() == ["real"]


def test_neither_keys_nor_aliases_is_400(client: FlaskClient) -> None:
    error = assert_error(delete(client, {}), 400, "keys")
    assert error["message"] == "'keys' or 'key_aliases' is required"
    assert_error(delete(client, {"key_aliases": []}), 400, "key_aliases")
    assert_error(delete(client, {"key_aliases": [7]}), 400)
