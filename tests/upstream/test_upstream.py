"""The ``openai/`` and ``azure/`` adapters against real HTTP servers.

The hot path speaks urllib3 directly, which ``responses`` (it patches
``requests``) cannot intercept, so these tests use the real mock OpenAI server
(the ``upstream`` fixture) and, for answers no well-behaved server gives, a
tiny socket server that sends canned bytes.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import urllib3
from flask import Flask
from flask.testing import FlaskClient

from proxy.call.auth import hash_key
from proxy.config import build_config
from proxy.errors import ProxyError
from proxy.storage.counters import proxy_total
from proxy.storage.models import Customer, Key, SpendLog
from proxy.upstream.client import UpstreamClient
from proxy.upstream.deployments import Deployment, ModelTable
from tests.conftest import MASTER, base_config
from tests.support.mock_openai import MockOpenAI, chat_prompt_tokens
from tests.support.plugins import OutcomeRecorder
from tests.support.proxy_server import free_port
from tests.support.raw_server import RawHTTPServer

MESSAGES = [{"role": "user", "content": "what llm are you"}]
VIRTUAL_KEY = "sk-virtual-upstream-test-key"
VIRTUAL = {"Authorization": f"Bearer {VIRTUAL_KEY}"}


def model_list(mock: MockOpenAI, timeout: float = 5, **extra: Any) -> list[dict[str, Any]]:
    """An ``openai/`` chat and embedding model and an ``azure/`` deployment on the mock."""
    return [
        {
            "model_name": "gpt-4o-mini",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": mock.base_url,
                "api_key": "sk-upstream-openai",
                "timeout": timeout,
                **extra,
            },
        },
        {
            "model_name": "ada",
            "litellm_params": {
                "model": "openai/text-embedding-ada-002",
                "api_base": mock.base_url,
                "api_key": "sk-upstream-openai",
                "timeout": timeout,
            },
        },
        {
            "model_name": "azure-gpt",
            "litellm_params": {
                "model": "azure/my-gpt35-deployment",
                "api_base": mock.root_url,
                "api_key": "azure-upstream-key",
                "api_version": "2024-06-01",
                "timeout": timeout,
                "input_cost_per_token": 0.000001,
                "output_cost_per_token": 0.000002,
            },
        },
    ]


@pytest.fixture
def client(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> FlaskClient:
    app = make_app(
        base_config(db_url, model_list=model_list(upstream, timeout=1)),
        plugins=[("recorder", recorder)],
    )
    Key.create(token=hash_key(VIRTUAL_KEY), key_name="sk-...-key")
    return app.test_client()


def assert_nothing_charged() -> None:
    assert SpendLog.select().count() == 0
    assert Key.get_by_id(hash_key(VIRTUAL_KEY)).spend == 0
    assert proxy_total() == 0
    assert Customer.select().count() == 0


# --- requests as the upstream sees them -------------------------------------


def test_openai_body_passes_through_unchanged_except_model(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = {
        "model": "gpt-4o-mini",
        "messages": MESSAGES,
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "user": "end-user-1",
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        "response_format": {"type": "text"},
        "logit_bias": {"50256": -100},
        "some_future_field": {"nested": [1, "two", None]},
    }
    resp = client.post("/chat/completions", json=body, headers=VIRTUAL)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (seen,) = upstream.requests
    assert seen.method == "POST"
    assert seen.path == "/v1/chat/completions"
    assert seen.json == body  # the upstream model name happens to equal the public one here


def test_model_is_mapped_to_the_upstream_model(client: FlaskClient, upstream: MockOpenAI) -> None:
    body = {"model": "ada", "input": ["one", "two"], "encoding_format": "float", "dimensions": 4}
    resp = client.post("/v1/embeddings", json=body, headers=VIRTUAL)
    assert resp.status_code == 200
    (seen,) = upstream.requests
    assert seen.path == "/v1/embeddings"
    assert seen.json == {**body, "model": "text-embedding-ada-002"}
    assert [len(d["embedding"]) for d in resp.get_json()["data"]] == [4, 4]


def test_the_upstream_answer_reaches_the_client_unchanged(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    resp = client.post(
        "/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "mock_response": "alpha beta"},
        headers=VIRTUAL,
    )
    answer = resp.get_json()
    assert answer["id"].startswith("chatcmpl-mock")
    assert answer["system_fingerprint"] == "fp_mock"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "This is a mock response from the Comptroller test upstream.",
        "refusal": None,
    }  # mock_response is the proxy's own test switch: not sent to a real upstream
    assert "mock_response" not in upstream.requests[0].json


def test_proxy_only_fields_are_not_forwarded(client: FlaskClient, upstream: MockOpenAI) -> None:
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "metadata": {"user_id": "someone"}}
    assert client.post("/chat/completions", json=body, headers=VIRTUAL).status_code == 200
    assert "metadata" not in upstream.requests[0].json
    assert SpendLog.get().end_user == "someone"


def test_openai_upstream_gets_its_own_key_as_bearer_not_the_clients(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    headers = {**VIRTUAL, "x-litellm-customer-id": "cust-9"}
    client.post("/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES},
                headers=headers)  # fmt: skip
    seen = upstream.requests[0].headers
    assert seen["authorization"] == "Bearer sk-upstream-openai"
    assert "api-key" not in seen
    assert "x-litellm-customer-id" not in seen
    assert VIRTUAL_KEY not in str(seen)


def test_azure_deployment_url_api_version_and_api_key_header(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = {"model": "azure-gpt", "messages": MESSAGES, "max_tokens": 3}
    resp = client.post("/chat/completions", json=body, headers=VIRTUAL)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (seen,) = upstream.requests
    assert seen.path == "/openai/deployments/my-gpt35-deployment/chat/completions"
    assert seen.query == {"api-version": "2024-06-01"}
    assert seen.headers["api-key"] == "azure-upstream-key"
    assert "authorization" not in seen.headers
    assert seen.json == {**body, "model": "my-gpt35-deployment"}
    assert resp.get_json()["choices"][0]["finish_reason"] == "length"


def test_azure_clients_route_reaches_the_azure_upstream(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    resp = client.post(
        "/openai/deployments/azure-gpt/chat/completions?api-version=2024-02-01",
        json={"messages": MESSAGES},
        headers={"api-key": VIRTUAL_KEY},
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    (seen,) = upstream.requests
    assert seen.path == "/openai/deployments/my-gpt35-deployment/chat/completions"
    assert seen.query == {"api-version": "2024-06-01"}  # the deployment's, from the config


def test_an_upstream_that_checks_keys_accepts_the_configured_ones(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    with MockOpenAI(api_key="sk-upstream-openai") as strict:
        app = make_app(base_config(db_url, model_list=model_list(strict)))
        body = {"model": "gpt-4o-mini", "messages": MESSAGES}
        assert (
            app.test_client().post("/chat/completions", json=body, headers=MASTER).status_code
            == 200
        )
        strict.api_key = "something-else"
        resp = app.test_client().post("/chat/completions", json=body, headers=MASTER)
        assert resp.status_code == 401
        assert resp.get_json()["error"]["message"] == "Incorrect API key provided."


# --- upstream failures (SPEC section 4) --------------------------------------


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 503])
def test_upstream_error_keeps_status_and_message_and_charges_nothing(
    client: FlaskClient, upstream: MockOpenAI, recorder: OutcomeRecorder, status: int
) -> None:
    upstream.fail_status, upstream.fail_message = status, f"upstream says {status}"
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "user": "cust-1"}
    resp = client.post("/chat/completions", json=body, headers=VIRTUAL)
    assert resp.status_code == status
    error = resp.get_json()["error"]
    assert error["message"] == f"upstream says {status}"
    # The upstream's own code is kept when it sends one (the mock does for 429).
    assert error["code"] == ("rate_limit_exceeded" if status == 429 else str(status))
    # Transient failures are retried (num_retries defaults to 2); the client's are not,
    # nor a 404 on a group's only deployment.
    assert len(upstream.requests) == (3 if status in (429, 500, 503) else 1)
    assert recorder.outcomes == ["failed"]
    assert_nothing_charged()


def test_upstream_error_on_a_stream_keeps_status_before_any_byte(
    client: FlaskClient, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> None:
    upstream.fail_status, upstream.fail_message = 429, "Rate limit reached for requests"
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    resp = client.post("/chat/completions", json=body, headers=VIRTUAL)
    assert resp.status_code == 429
    assert resp.get_json()["error"]["message"] == "Rate limit reached for requests"
    assert recorder.outcomes == ["failed"]
    assert_nothing_charged()


@pytest.mark.parametrize("stream", [False, True])
def test_connection_refused_is_502_and_charges_nothing(
    make_app: Callable[..., Flask], db_url: str, recorder: OutcomeRecorder, stream: bool
) -> None:
    dead = MockOpenAI(port=free_port())  # never started: nothing listens there
    app = make_app(base_config(db_url, model_list=model_list(dead)), plugins=[("r", recorder)])
    Key.create(token=hash_key(VIRTUAL_KEY), key_name="sk-...-key")
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    resp = app.test_client().post("/chat/completions", json=body, headers=VIRTUAL)
    assert resp.status_code == 502
    error = resp.get_json()["error"]
    assert error["type"] == "api_error"
    # Which deployment failed and why; not where it lives (host and port are the operator's).
    assert error["message"] == (
        "Upstream connection failed for model gpt-4o-mini "
        "(deployment openai/gpt-4o-mini): Connection refused"
    )
    answer = resp.get_data(as_text=True)
    assert "sk-upstream-openai" not in answer
    assert str(dead.port) not in answer and "127.0.0.1" not in answer
    assert recorder.outcomes == ["failed"]
    assert_nothing_charged()


@pytest.mark.parametrize(
    ("behaviour", "stream"),
    [({"hang": True}, False), ({"delay": 3}, False), ({"hang": True}, True)],
)
def test_a_slow_upstream_is_504_timeout_and_charges_nothing(
    client: FlaskClient,
    upstream: MockOpenAI,
    recorder: OutcomeRecorder,
    behaviour: dict,
    stream: bool,
) -> None:
    upstream.configure(**behaviour)  # the model's timeout is 1 s
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream}
    resp = client.post("/chat/completions", json=body, headers=VIRTUAL)
    upstream.reset()  # let the mock's handler go
    assert resp.status_code == 504
    error = resp.get_json()["error"]
    assert error["type"] == "timeout"
    assert error["code"] == "504"
    assert "timed out after 1s" in error["message"]
    assert recorder.outcomes == ["failed"]
    assert_nothing_charged()


def test_after_a_failure_the_next_call_succeeds(client: FlaskClient, upstream: MockOpenAI) -> None:
    upstream.fail_next(3, status=500)  # the call and its two retries
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    assert client.post("/chat/completions", json=body, headers=VIRTUAL).status_code == 500
    assert client.post("/chat/completions", json=body, headers=VIRTUAL).status_code == 200
    assert SpendLog.select().count() == 1


# --- answers no well-behaved upstream gives: a tiny socket server -----------


class CannedServer(RawHTTPServer):
    """Answers every request with ``reply`` (raw bytes) and hangs up; ``reply=None``
    hangs up without a word."""

    def __init__(self, reply: bytes | None) -> None:
        super().__init__(lambda index: reply, hang_up=lambda index: True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def http_reply(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


@pytest.fixture
def canned() -> Iterator[Callable[[bytes | None], CannedServer]]:
    servers: list[CannedServer] = []

    def start(reply: bytes | None) -> CannedServer:
        servers.append(CannedServer(reply))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def deployment_for(base_url: str, timeout: float = 2) -> Deployment:
    config = build_config(
        {
            "general_settings": {"master_key": "sk-x"},
            "model_list": [
                {
                    "model_name": "gpt-4o-mini",
                    "litellm_params": {
                        "model": "openai/gpt-4o-mini",
                        "api_base": base_url,
                        "api_key": "sk-upstream-openai",
                        "timeout": timeout,
                    },
                }
            ],
        }
    )
    dep = ModelTable(config).get("gpt-4o-mini")
    assert dep is not None
    return dep


CHAT_BODY = {"model": "gpt-4o-mini", "messages": MESSAGES}


@pytest.mark.parametrize(
    ("reply", "status", "message"),
    [
        (http_reply("200 OK", b"<html>not json</html>", "text/html"), 502, "invalid JSON"),
        (http_reply("200 OK", b"[1, 2, 3]"), 502, "unexpected answer"),
        (None, 502, "gpt-4o-mini"),
        (b"garbage that is not http\r\n\r\n", 502, "gpt-4o-mini"),
        (http_reply("503 Service Unavailable", b"upstream overloaded", "text/plain"), 503,
         "upstream overloaded"),
        (http_reply("502 Bad Gateway", b""), 502, "upstream answered HTTP 502"),
        (http_reply("400 Bad Request", b'{"error": "just a string"}'), 400, "just a string"),
    ],
)  # fmt: skip
def test_odd_upstream_answers_map_to_openai_errors(
    canned: Callable[[bytes | None], CannedServer],
    reply: bytes | None,
    status: int,
    message: str,
) -> None:
    server = canned(reply)
    with pytest.raises(ProxyError) as err:
        UpstreamClient().call(deployment_for(server.base_url), "chat", CHAT_BODY)
    assert err.value.status == status
    assert message in err.value.message
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}


def test_connections_to_an_upstream_are_kept_alive_and_reused(upstream: MockOpenAI) -> None:
    client = UpstreamClient()
    dep = deployment_for(upstream.base_url)
    for _ in range(3):
        assert client.call(dep, "chat", CHAT_BODY)["object"] == "chat.completion"
    origin, _ = client.route(f"{upstream.base_url}/chat/completions")
    assert origin.requests == 3
    assert origin.connections == 1


def test_the_upstream_gets_the_request_urllib3_sends(
    canned: Callable[[bytes | None], CannedServer],
) -> None:
    """The request line and headers, in order, as ``pool.urlopen`` sent them."""
    server = canned(http_reply("200 OK", b'{"object": "chat.completion"}'))
    UpstreamClient().call(deployment_for(server.base_url), "chat", CHAT_BODY)
    body = json.dumps(CHAT_BODY).encode()
    assert server.requests == [
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{server.port}\r\n".encode()
        + b"Accept-Encoding: identity\r\n"
        + f"Content-Length: {len(body)}\r\n".encode()
        + f"User-Agent: python-urllib3/{urllib3.__version__}\r\n".encode()
        + b"Content-Type: application/json\r\nAccept: application/json\r\n"
        + b"Authorization: Bearer sk-upstream-openai\r\n\r\n"
        + body
    ]


class _CountingSocket:
    """A connection's socket that counts the writes made on it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_request_goes_out_in_one_write(upstream: MockOpenAI) -> None:
    """The head and the body in one ``sendall`` (the peer is woken once); a
    body over the limit goes in a write of its own, the request unchanged."""
    client = UpstreamClient()
    dep = deployment_for(upstream.base_url)
    client.call(dep, "chat", CHAT_BODY)
    origin, _ = client.route(f"{upstream.base_url}/chat/completions")
    (conn,) = origin._idle
    counting = _CountingSocket(conn.sock)
    conn.sock = counting  # type: ignore[assignment]
    assert client.call(dep, "chat", CHAT_BODY)["object"] == "chat.completion"
    body = json.dumps(CHAT_BODY).encode()
    assert len(counting.writes) == 1
    assert counting.writes[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert counting.writes[0].endswith(b"\r\n\r\n" + body)

    big = {**CHAT_BODY, "messages": [{"role": "user", "content": "x" * (1 << 20)}]}
    counting.writes.clear()
    assert client.call(dep, "chat", big)["object"] == "chat.completion"
    assert len(counting.writes) == 2
    assert counting.writes[0].endswith(b"\r\n\r\n")
    assert counting.writes[1] == json.dumps(big).encode()
    counting.writes.clear()
    assert client.call(dep, "chat", CHAT_BODY)["object"] == "chat.completion"
    assert len(counting.writes) == 1  # nothing of the big request held over


def test_a_half_read_stream_is_not_reused(upstream: MockOpenAI) -> None:
    """Closing a stream early must not leave its leftovers for the next call."""
    upstream.stream_chunk_delay = 0.05
    client = UpstreamClient()
    dep = deployment_for(upstream.base_url)
    relay = client.stream(dep, {**CHAT_BODY, "stream": True})
    first = next(iter(relay))
    assert first.startswith(b"data: ")
    relay.close()
    upstream.stream_chunk_delay = 0
    answer = client.call(dep, "chat", CHAT_BODY)
    assert answer["object"] == "chat.completion"


# --- pricing: cost on the spend log = tokens x prices ------------------------


def test_cost_uses_the_shipped_price_table(client: FlaskClient, upstream: MockOpenAI) -> None:
    resp = client.post("/chat/completions", json=CHAT_BODY, headers=VIRTUAL)
    usage = resp.get_json()["usage"]
    assert usage["prompt_tokens"] == chat_prompt_tokens(MESSAGES)
    row = SpendLog.get()
    assert (row.prompt_tokens, row.completion_tokens) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    )
    # gpt-4o-mini, published: $0.15 / $0.60 per million tokens.
    expected = usage["prompt_tokens"] * 0.15e-6 + usage["completion_tokens"] * 0.6e-6
    assert row.spend == pytest.approx(expected, rel=1e-12)
    assert Key.get_by_id(hash_key(VIRTUAL_KEY)).spend == pytest.approx(expected, rel=1e-12)


def test_cost_uses_the_litellm_params_override(client: FlaskClient) -> None:
    resp = client.post(
        "/chat/completions", json={"model": "azure-gpt", "messages": MESSAGES}, headers=VIRTUAL
    )
    usage = resp.get_json()["usage"]
    expected = usage["prompt_tokens"] * 0.000001 + usage["completion_tokens"] * 0.000002
    assert SpendLog.get().spend == pytest.approx(expected, rel=1e-12)


def test_embeddings_are_charged_for_prompt_tokens_only(client: FlaskClient) -> None:
    resp = client.post("/embeddings", json={"model": "ada", "input": "x" * 40}, headers=VIRTUAL)
    usage = resp.get_json()["usage"]
    assert usage["prompt_tokens"] == 10
    assert SpendLog.get().spend == pytest.approx(10 * 0.1e-6, rel=1e-12)


def test_a_model_without_a_price_is_served_and_charged_zero(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI
) -> None:
    entry = {
        "model_name": "house-model",
        "litellm_params": {"model": "openai/house-model-7b", "api_base": upstream.base_url},
    }
    app = make_app(base_config(db_url, model_list=[entry]))
    resp = app.test_client().post(
        "/chat/completions", json={"model": "house-model", "messages": MESSAGES}, headers=MASTER
    )
    assert resp.status_code == 200
    row = SpendLog.get()
    assert row.prompt_tokens > 0
    assert row.spend == 0
