"""One rule for numbers in admin bodies: a JSON number or a string holding one.

Money may be fractional; counts (rpm_limit, tpm_limit, max_parallel_requests)
must be whole; booleans and words are 400 naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.conftest import MASTER
from tests.support.assertions import assert_error

# (route, body that creates an entity, how to read the field back from the answer)
ROUTES = [
    ("/key/generate", {}),
    ("/user/new", {"user_id": "u1"}),
    ("/customer/new", {"user_id": "c1"}),
    ("/budget/new", {"budget_id": "b1"}),
]


def _field(answer: dict[str, Any], name: str) -> Any:
    table = answer.get("litellm_budget_table")
    return table[name] if isinstance(table, dict) and name in table else answer[name]


@pytest.mark.parametrize(("route", "base"), ROUTES)
@pytest.mark.parametrize(
    ("field", "sent", "stored"),
    [
        ("rpm_limit", "4", 4),
        ("rpm_limit", 4, 4),
        ("rpm_limit", " 4 ", 4),
        ("rpm_limit", 4.0, 4),
        ("max_budget", "4", 4.0),
        ("max_budget", "4.5", 4.5),
        ("max_budget", 4, 4.0),
        ("max_budget", "1e-3", 0.001),
        ("tpm_limit", "9223372036854775807", 9223372036854775807),
    ],
)
def test_numbers_and_numeric_strings_are_the_same_value(
    client: FlaskClient, route: str, base: dict, field: str, sent: Any, stored: Any
) -> None:
    resp = client.post(route, json={**base, field: sent}, headers=MASTER)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    value = _field(resp.get_json(), field)
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize(("route", "base"), ROUTES)
@pytest.mark.parametrize(
    ("field", "sent", "says"),
    [
        ("rpm_limit", "4.5", "not a whole number"),
        ("rpm_limit", 4.5, "not a whole number"),
        ("rpm_limit", "four", "is not a number"),
        ("rpm_limit", True, "must be a number or a numeric string"),
        ("rpm_limit", "-1", "greater than or equal to 0"),
        ("max_budget", "four", "is not a number"),
        ("max_budget", False, "must be a number or a numeric string"),
        ("max_budget", "nan", "must be a finite number"),
        ("max_budget", "-4", "must not be negative"),
        ("tpm_limit", "9223372036854775808", "less than or equal to 9223372036854775807"),
    ],
)
def test_anything_else_is_400_naming_the_field(
    client: FlaskClient, route: str, base: dict, field: str, sent: Any, says: str
) -> None:
    error = assert_error(client.post(route, json={**base, field: sent}, headers=MASTER), 400, field)
    assert says in error["message"]
