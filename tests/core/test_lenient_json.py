"""The almost-JSON of documentation curls, and what must still be refused."""

from __future__ import annotations

import json

import pytest

from proxy.api import lenient_json
from tests.support.seeds import CUSTOMER_CURL_BODY


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "b": [true, false, null], "c": "x # not a comment"}',
        '{"quote": "say \\"hi\\" # still text", "n": -1.5e-3}',
        '{"url": "http://0.0.0.0:4000/#anchor"}',
        "[]",
        '"just a string"',
    ],
)
def test_strict_json_is_read_exactly_as_json_reads_it(text: str) -> None:
    assert lenient_json.loads(text) == json.loads(text)
    assert lenient_json.loads(text.encode()) == json.loads(text)


def test_the_seed_customer_body_with_an_inline_comment() -> None:
    assert lenient_json.loads(CUSTOMER_CURL_BODY) == {
        "model": "azure-gpt-3.5",
        "user": "ishaan3",
        "messages": [{"role": "user", "content": "what time is it"}],
    }


def test_the_seed_body_as_mis_decoded_on_the_web_page() -> None:
    # The first seed carries the emoji as cp1252 mojibake; it is inside a comment.
    body = (
        '{\n  "user_id" : "my-customer-id",\n'
        '  "max_budget": "0", # \u00f0\u0178\u2018\u02c6 CAN BE FLOAT\n}'
    )
    assert lenient_json.loads(body.encode("utf-8")) == {
        "user_id": "my-customer-id",
        "max_budget": "0",
    }


def test_trailing_commas_and_a_bare_duration() -> None:
    body = (
        '{\n  "team_id": "core-infra", # [OPTIONAL]\n'
        '  "max_budget": 10,\n  "budget_duration": 10s,\n}'
    )
    assert lenient_json.loads(body) == {
        "team_id": "core-infra",
        "max_budget": 10,
        "budget_duration": "10s",
    }


def test_trailing_comma_in_a_list_and_bare_literals_stay_literals() -> None:
    assert lenient_json.loads('{"a": [1, 2, ], "b": true, "c": null, "d": 1mo,}') == {
        "a": [1, 2],
        "b": True,
        "c": None,
        "d": "1mo",
    }


def test_a_comment_after_an_escaped_quote_is_still_dropped() -> None:
    assert lenient_json.loads('{"a": "q\\"#", # comment "with quotes"\n "b": 1}') == {
        "a": 'q"#',
        "b": 1,
    }


@pytest.mark.parametrize(
    "text",
    [
        "{bad",
        '{"a": }',
        '{"a" 1}',
        '{"a": "unterminated}',
        "",
        "# only a comment",
    ],
)
def test_still_broken_after_cleaning_reports_the_strict_error(text: str) -> None:
    with pytest.raises(ValueError) as err:
        lenient_json.loads(text)
    try:
        json.loads(text)
    except ValueError as strict:
        assert str(err.value) == str(strict)


@pytest.mark.parametrize("text", ["[1, NaN]", '{"t": Infinity}', '{"t": -Infinity}'])
def test_nan_and_infinity_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        lenient_json.loads(text)


def test_deep_nesting_is_a_value_error_not_a_crash() -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        lenient_json.loads("[" * 100_000 + "]" * 100_000)


def test_bytes_that_are_not_utf8_are_a_value_error() -> None:
    with pytest.raises(ValueError):
        lenient_json.loads(b"\xff\xfe{}")
