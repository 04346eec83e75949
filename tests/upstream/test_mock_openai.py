import base64
import json
import math
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.support.mock_openai import DEFAULT_CONTENT, MockOpenAI
from tests.support.proxy_server import wait_until

WORDS = DEFAULT_CONTENT.split()
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def mock():
    with MockOpenAI() as server:
        yield server


@pytest.fixture
def sdk(mock):
    return openai.OpenAI(base_url=mock.base_url, api_key="x", max_retries=0, timeout=5)


def chat_body(**extra):
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}], **extra}


def test_urls(mock):
    assert mock.root_url == f"http://127.0.0.1:{mock.port}"
    assert mock.base_url == mock.root_url + "/v1"
    assert mock.port > 0


def test_chat_completion_with_the_sdk(mock, sdk):
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello there"},
    ]
    answer = sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert answer.object == "chat.completion"
    assert answer.model == "gpt-4o-mini"
    assert answer.id.startswith("chatcmpl-")
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == DEFAULT_CONTENT
    assert choice.finish_reason == "stop"
    prompt = math.ceil(len("be brief" + "hello there") / 4) + 3 * 2
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == prompt
    assert answer.usage.completion_tokens == len(WORDS)
    assert answer.usage.total_tokens == prompt + len(WORDS)


def test_max_tokens_truncates_and_mock_response_replaces(mock):
    url = mock.base_url + "/chat/completions"
    short = requests.post(url, json=chat_body(max_tokens=3)).json()
    assert short["choices"][0]["message"]["content"] == " ".join(WORDS[:3])
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3
    custom = requests.post(url, json=chat_body(mock_response="one two")).json()
    assert custom["choices"][0]["message"]["content"] == "one two"
    assert custom["usage"]["completion_tokens"] == 2
    bare = requests.post(mock.root_url + "/chat/completions", json=chat_body()).json()
    assert bare["choices"][0]["message"]["content"] == DEFAULT_CONTENT


def test_requests_are_recorded(mock):
    requests.post(
        mock.base_url + "/chat/completions?x=1",
        json=chat_body(),
        headers={"Authorization": "Bearer k", "X-Custom": "v"},
    )
    (rec,) = mock.requests
    assert (rec.method, rec.path, rec.query) == ("POST", "/v1/chat/completions", {"x": "1"})
    assert rec.headers["authorization"] == "Bearer k"
    assert rec.headers["x-custom"] == "v"
    assert rec.json == chat_body()


def test_stream_with_usage_arrives_chunk_by_chunk(mock, sdk):
    delay = 0.05
    mock.stream_chunk_delay = delay
    started = time.monotonic()
    stream = sdk.chat.completions.create(
        model="gpt-4o",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = []
    first_at = None
    in_flight_at_first = None
    for chunk in stream:
        if first_at is None:
            first_at = time.monotonic()
            in_flight_at_first = mock.in_flight
        chunks.append(chunk)
    ended = time.monotonic()
    assert first_at is not None
    # The server was still writing when the client read the first chunk...
    assert in_flight_at_first == 1
    # ...the stream took its gaps between chunks...
    assert ended - started >= delay * (len(chunks) - 1)
    # ...and most of them came after the first chunk. (Not all: on a loaded machine the
    # client may read its first chunk late, and what queued meanwhile then comes at once.)
    assert ended - first_at > delay * (len(chunks) - 1) / 2
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == DEFAULT_CONTENT
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == len(WORDS)
    assert last.usage.prompt_tokens == math.ceil(2 / 4) + 3
    assert all(c.usage is None for c in chunks[:-1])
    mock.wait_in_flight(0)
    assert mock.in_flight == 0


def test_stream_wire_format(mock):
    with requests.post(
        mock.base_url + "/chat/completions", json=chat_body(stream=True), stream=True
    ) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["transfer-encoding"] == "chunked"
        lines = [line for line in resp.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    events = [json.loads(line[len(b"data: ") :]) for line in lines[:-1]]
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    # One chunk per word, then the finish chunk; no usage chunk without include_usage.
    assert len(events) == 1 + len(WORDS) + 1
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in e for e in events)


def test_client_hanging_up_mid_stream_is_counted(mock):
    mock.stream_chunk_delay = 0.02
    sock = socket.create_connection(("127.0.0.1", mock.port))
    body = json.dumps(chat_body(stream=True)).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # RST: the next write fails on the server
    wait_until(lambda: mock.aborted_streams > 0, timeout=2)
    assert mock.aborted_streams == 1
    mock.wait_in_flight(0)
    assert mock.in_flight == 0


def test_embeddings(mock, sdk):
    one = sdk.embeddings.create(model="text-embedding-3-small", input="abcdefgh")
    assert one.model == "text-embedding-3-small"
    assert len(one.data) == 1 and len(one.data[0].embedding) == 8
    assert one.usage.prompt_tokens == 2 and one.usage.total_tokens == 2
    many = sdk.embeddings.create(model="text-embedding-ada-002", input=["abcd", "abcde", "abcd"])
    assert [d.index for d in many.data] == [0, 1, 2]
    assert many.data[0].embedding == many.data[2].embedding != many.data[1].embedding
    assert many.usage.prompt_tokens == 1 + 2 + 1
    tokens = requests.post(
        mock.root_url + "/embeddings", json={"model": "m", "input": [[1, 2, 3], [4]]}
    ).json()
    assert tokens["object"] == "list" and tokens["usage"]["prompt_tokens"] == 4
    assert tokens["data"][1]["object"] == "embedding"


def test_embeddings_base64(mock):
    resp = requests.post(
        mock.base_url + "/embeddings",
        json={"model": "m", "input": "x", "encoding_format": "base64"},
    ).json()
    floats = struct.unpack("<8f", base64.b64decode(resp["data"][0]["embedding"]))
    assert all(-1.0 <= f <= 1.0 for f in floats)


def test_models(mock, sdk):
    ids = [m.id for m in sdk.models.list()]
    assert "gpt-4o" in ids
    assert requests.get(mock.root_url + "/models").json()["object"] == "list"


def test_fail_status_answers_an_openai_error(mock, sdk):
    mock.fail_status = 503
    mock.fail_message = "overloaded"
    with pytest.raises(openai.APIStatusError) as info:
        sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 503
    resp = requests.post(mock.base_url + "/chat/completions", json=chat_body())
    assert resp.status_code == 503
    assert resp.json() == {
        "error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}
    }
    mock.fail_status = None
    assert requests.post(mock.base_url + "/chat/completions", json=chat_body()).ok


def test_fail_next_only_the_next_calls(mock):
    mock.fail_next(2, 429, "slow down")
    url = mock.base_url + "/chat/completions"
    statuses = [requests.post(url, json=chat_body()).status_code for _ in range(3)]
    assert statuses == [429, 429, 200]
    mock.fail_next(1, 400)
    err = requests.post(url, json=chat_body()).json()["error"]
    assert err["type"] == "invalid_request_error"


def test_delay(mock):
    mock.delay = 0.2
    started = time.monotonic()
    assert requests.post(mock.base_url + "/chat/completions", json=chat_body()).ok
    assert time.monotonic() - started >= 0.2


def test_hang_until_cleared(mock):
    mock.hang = True
    with pytest.raises(requests.ReadTimeout):
        requests.post(mock.base_url + "/chat/completions", json=chat_body(), timeout=0.2)
    mock.hang = False
    assert requests.post(mock.base_url + "/chat/completions", json=chat_body(), timeout=2).ok


def test_in_flight_high_water_mark(mock):
    mock.delay = 0.2
    mock.hang = True  # held until all five are in
    statuses = []

    def call():
        resp = requests.post(mock.base_url + "/chat/completions", json=chat_body())
        statuses.append(resp.status_code)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for t in threads:
        t.start()
    mock.wait_in_flight(5)
    assert mock.in_flight == 5
    mock.hang = False
    for t in threads:
        t.join()
    assert statuses == [200] * 5
    mock.wait_in_flight(0)
    assert mock.in_flight == 0
    assert mock.max_in_flight == 5
    mock.reset()
    assert (mock.max_in_flight, mock.requests, mock.delay) == (0, [], 0.0)


def test_http_control_routes(mock):
    root = mock.root_url
    config = requests.post(
        root + "/_mock/config",
        json={"delay": 0.05, "fail_next": {"n": 1, "status": 500, "message": "boom"}},
    ).json()
    assert config["delay"] == 0.05 and config["fail_next"] == 1
    first = requests.post(mock.base_url + "/chat/completions", json=chat_body())
    assert (first.status_code, first.json()["error"]["message"]) == (500, "boom")
    assert requests.post(mock.base_url + "/chat/completions", json=chat_body()).ok
    mock.wait_in_flight(0)  # the handler may still be finishing after its answer was read
    stats = requests.get(root + "/_mock/stats").json()
    assert stats["requests"] == 2 and stats["in_flight"] == 0 and stats["max_in_flight"] == 1
    recorded = requests.get(root + "/_mock/requests").json()["requests"]
    assert recorded[0]["json"]["model"] == "gpt-4o"
    assert requests.post(root + "/_mock/config", json={"nope": 1}).status_code == 400
    assert requests.post(root + "/_mock/reset").json()["requests"] == 0
    assert mock.delay == 0.0 and mock.requests == []


def test_azure_routes(mock):
    path = "/openai/deployments/my-gpt/chat/completions"
    ok = requests.post(
        mock.root_url + path + "?api-version=2024-06-01",
        json={"messages": [{"role": "user", "content": "hi"}]},
        headers={"api-key": "k"},
    )
    assert ok.status_code == 200 and ok.json()["model"] == "my-gpt"
    emb = requests.post(
        mock.root_url + "/openai/deployments/my-emb/embeddings?api-version=2024-06-01",
        json={"input": "hi"},
        headers={"api-key": "k"},
    )
    assert emb.json()["model"] == "my-emb"
    no_key = requests.post(mock.root_url + path + "?api-version=1", json=chat_body())
    assert no_key.status_code == 401 and "error" in no_key.json()
    no_version = requests.post(mock.root_url + path, json=chat_body(), headers={"api-key": "k"})
    assert no_version.status_code == 400
    assert no_version.json()["error"]["param"] == "api-version"


def test_azure_sdk(mock):
    client = openai.AzureOpenAI(
        azure_endpoint=mock.root_url, api_key="k", api_version="2024-06-01", max_retries=0
    )
    answer = client.chat.completions.create(
        model="dep-1", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.model == "dep-1"
    assert mock.requests[-1].query["api-version"] == "2024-06-01"


def test_api_key_is_checked_when_configured():
    with MockOpenAI(api_key="sk-up") as mock:
        url = mock.base_url + "/chat/completions"
        assert requests.post(url, json=chat_body()).status_code == 401
        wrong = requests.post(url, json=chat_body(), headers={"Authorization": "Bearer no"})
        assert wrong.status_code == 401
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        good = requests.post(url, json=chat_body(), headers={"Authorization": "Bearer sk-up"})
        assert good.ok
        azure = mock.root_url + "/openai/deployments/d/embeddings?api-version=1"
        assert requests.post(azure, json={"input": "x"}, headers={"api-key": "no"}).status_code == (
            401
        )
        assert requests.post(azure, json={"input": "x"}, headers={"api-key": "sk-up"}).ok


def test_bad_requests(mock):
    url = mock.base_url + "/chat/completions"
    malformed = requests.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400
    assert malformed.json()["error"]["type"] == "invalid_request_error"
    no_model = requests.post(url, json={"messages": [{"role": "user", "content": "x"}]})
    assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
    assert requests.post(url, json={"model": "m"}).json()["error"]["param"] == "messages"
    assert requests.get(url).status_code == 405
    assert requests.post(mock.base_url + "/nope", json={}).status_code == 404


def test_keep_alive_and_stop_drops_pooled_connections(mock):
    session = requests.Session()
    url = mock.base_url + "/models"
    assert session.get(url).ok and session.get(url).ok
    port = mock.port
    mock.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(url, timeout=1)
    mock.start()  # same port again
    assert mock.port == port
    assert session.get(url, timeout=1).ok


@pytest.mark.slow
def test_runs_as_its_own_process():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mock_openai", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"http://127.0.0.1:{port}/v1"
        answer = requests.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=chat_body())
        assert answer.json()["usage"]["completion_tokens"] == len(WORDS)
        assert requests.get(f"http://127.0.0.1:{port}/_mock/stats").json()["requests"] == 1
    finally:
        proc.terminate()
        proc.wait(timeout=5)
