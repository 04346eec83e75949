"""schemathesis against ``/openapi.json`` of a live proxy (gunicorn, master key).

Every operation of the document gets a bounded number of generated requests,
valid ones (``positive``) and invalid ones (``negative``), once on SQLite and
once on PostgreSQL. Each answer is checked: never a 5xx, a documented
status, a documented content type, a body that matches the documented
schema, and (for a 2xx) that the same request without a key or with a wrong
key is refused. The seeds' ids (the document's examples) are created first,
so the examples reach the success path of the info and update routes too.

``COMPTROLLER_FUZZ_EXAMPLES`` sets the valid examples per operation (CI: the
default, 20), ``COMPTROLLER_FUZZ_NEGATIVE_EXAMPLES`` the invalid ones (default:
half as many: the validation layer refuses every one of them the same way,
while valid ones reach each route's own code; the fuzz is a quarter of the
suite's time); ``COMPTROLLER_FUZZ_RANDOM=1`` draws new examples on every run
instead of the same reproducible ones. ``COMPTROLLER_FUZZ_ONLY=<regex>`` fuzzes only
the operations whose label ("POST /key/block") it matches, to try one route
while working on it (the totals are then not checked).
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from proxy.api.openapi.document import SEED_BUDGET, SEED_CUSTOMER, SEED_USER
from tests.conftest import MASTER, base_config
from tests.support.proxy_server import ProxyServer

EXAMPLES = int(os.environ.get("COMPTROLLER_FUZZ_EXAMPLES", "20"))
NEGATIVE_EXAMPLES = int(os.environ.get("COMPTROLLER_FUZZ_NEGATIVE_EXAMPLES", str(EXAMPLES // 2)))
RANDOM = os.environ.get("COMPTROLLER_FUZZ_RANDOM") == "1"
ONLY = os.environ.get("COMPTROLLER_FUZZ_ONLY")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
# Routes whose success path the run must reach, or it proved little about them.
MUST_SUCCEED = (
    "POST /chat/completions",
    "POST /embeddings",
    "POST /v1/responses",
    "POST /v1/completions",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "POST /key/generate",
    "POST /user/new",
    "GET /user/info",
    "POST /user/update",
    "GET /customer/info",
    "POST /customer/update",
    "POST /budget/new",
    "POST /budget/info",
    "POST /budget/update",
    "GET /spend/logs",
    "GET /key/list",
    "POST /team/new",
    "GET /team/list",
    "GET /global/spend/report",
    "GET /spend/logs/csv",
    "GET /models",
)


@pytest.fixture
def live_proxy(db_url: str, tmp_path: Path) -> Iterator[ProxyServer]:
    with ProxyServer(base_config(db_url), tmp_path, workers=2, threads=4) as server:
        yield server


def _create_seed_ids(url: str) -> None:
    calls = [
        ("/user/new", {"user_id": SEED_USER, "models": ["azure-models"], "max_budget": 100}),
        ("/budget/new", {"budget_id": SEED_BUDGET, "max_budget": 100}),
        ("/customer/new", {"user_id": SEED_CUSTOMER, "budget_id": SEED_BUDGET}),
    ]
    for path, body in calls:
        resp = requests.post(f"{url}{path}", json=body, headers=MASTER, timeout=10)
        assert resp.status_code == 200, resp.text


def _fuzz(
    operation: schemathesis.APIOperation,
    mode: GenerationMode,
    session: requests.Session,
    tally: dict[str, Counter[int]],
    headers: dict[str, str],
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES if mode == GenerationMode.POSITIVE else NEGATIVE_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=not RANDOM,
        suppress_health_check=list(HealthCheck),
        # No shrinking: a failure is reported as found, and CI time stays bounded.
        phases=[Phase.explicit, Phase.generate],
    )
    def run(case: schemathesis.Case) -> None:
        resp = case.call_and_validate(session=session, headers=headers, checks=CHECKS, timeout=30)
        tally[operation.label][resp.status_code] += 1

    run()


def _limited_key(url: str) -> dict[str, str]:
    limits = {
        "max_budget": 1000,
        "rpm_limit": 100000,
        "tpm_limit": 10**9,
        "max_parallel_requests": 8,
        "budget_duration": "1d",
    }
    made = requests.post(f"{url}/key/generate", json=limits, headers=MASTER, timeout=10)
    assert made.status_code == 200, made.text
    return {"Authorization": f"Bearer {made.json()['key']}"}


@pytest.mark.slow
def test_no_generated_request_gets_a_500_or_an_answer_off_the_schema(
    live_proxy: ProxyServer,
) -> None:
    _create_seed_ids(live_proxy.url)
    schema = schemathesis.openapi.from_url(f"{live_proxy.url}/openapi.json")
    session = requests.Session()
    tally: dict[str, Counter[int]] = {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    if ONLY:
        operations = [op for op in operations if re.search(ONLY, op.label)]
    # The LLM routes once more with a virtual key whose every limit is set, so the
    # budget and rate-limit plugins see the generated bodies too.
    limited = _limited_key(live_proxy.url)
    runs = [(op, MASTER, "master key") for op in operations] + [
        (op, limited, "virtual key")
        for op in operations
        if "LLM" in op.definition.raw.get("tags", []) and op.method.upper() == "POST"
    ]
    for operation, headers, who in runs:
        tally.setdefault(operation.label, Counter())
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode, session, tally, headers)
            except Unsatisfiable:
                pass  # no parameters and no body: nothing can be made invalid
            except Exception as err:  # each failure is reported, then the next operation runs
                failures.append(f"{operation.label} [{mode.value}, {who}]: {err}")
    assert not failures, "\n\n".join(failures)
    assert all(sum(counts.values()) > 0 for counts in tally.values()), tally
    must = [label for label in MUST_SUCCEED if not ONLY or re.search(ONLY, label)]
    unreached = [label for label in must if tally[label][200] == 0]
    assert not unreached, {label: dict(tally[label]) for label in unreached}
    if not ONLY:
        assert len(operations) >= 49
