"""Streaming: SSE relayed chunk by chunk, usage metered, interrupted streams charged.

The first group runs in-process against the mock OpenAI server; the second
runs the proxy under real gunicorn, because only a real server shows when
bytes reach the client and what happens when the client hangs up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient

from proxy.call.estimate import estimate_prompt_tokens
from proxy.storage.counters import proxy_total
from proxy.storage.db import database, init_database
from proxy.storage.migrate import migrate
from proxy.storage.models import Customer, SpendLog
from proxy.upstream.client import StreamRelay
from tests.conftest import MASTER, base_config, openai_model
from tests.support.mock_openai import DEFAULT_CONTENT, MockOpenAI, chat_prompt_tokens
from tests.support.plugins import OutcomeRecorder
from tests.support.proxy_server import ProxyServer, wait_until

MESSAGES = [{"role": "user", "content": "tell me a story"}]
STREAM = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}


def sse_events(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        payload = block[len("data: ") :]
        events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def content_of(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


@pytest.fixture
def client(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> FlaskClient:
    models = [openai_model("gpt-4o-mini", upstream.base_url, timeout=1)]
    app = make_app(base_config(db_url, model_list=models), plugins=[("recorder", recorder)])
    return app.test_client()


# --- in-process -------------------------------------------------------------


def test_stream_is_relayed_as_sse_and_metered_from_its_usage(
    client: FlaskClient, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> None:
    resp = client.post("/chat/completions", json={**STREAM, "user": "reader"}, headers=MASTER)
    assert resp.status_code == 200
    assert resp.mimetype == "text/event-stream"
    events = sse_events(resp.get_data())
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "chat.completion.chunk" for e in events[:-1])
    assert content_of(events) == DEFAULT_CONTENT
    # The proxy asked for usage on the client's behalf...
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    # ...metered it...
    row = SpendLog.get()
    assert row.status == "success"
    assert row.prompt_tokens == chat_prompt_tokens(MESSAGES)
    assert row.completion_tokens == len(DEFAULT_CONTENT.split())
    expected = row.prompt_tokens * 0.15e-6 + row.completion_tokens * 0.6e-6
    assert row.spend == pytest.approx(expected, rel=1e-12)
    assert Customer.get_by_id("reader").spend == pytest.approx(expected, rel=1e-12)
    assert proxy_total() == pytest.approx(expected, rel=1e-12)
    # ...and did not hand the client a chunk with empty choices it never asked for.
    assert all(e["choices"] for e in events[:-1])
    assert recorder.outcomes == ["success"]


def test_a_client_that_asks_for_usage_gets_the_usage_chunk(
    client: FlaskClient, upstream: MockOpenAI
) -> None:
    body = {**STREAM, "stream_options": {"include_usage": True}}
    events = sse_events(client.post("/chat/completions", json=body, headers=MASTER).get_data())
    usage_chunks = [e for e in events[:-1] if e["choices"] == []]
    assert len(usage_chunks) == 1
    row = SpendLog.get()
    assert usage_chunks[0]["usage"] == {
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
    }


def test_other_stream_options_are_kept(client: FlaskClient, upstream: MockOpenAI) -> None:
    body = {**STREAM, "stream_options": {"include_usage": False, "future_option": 1}}
    events = sse_events(client.post("/chat/completions", json=body, headers=MASTER).get_data())
    assert all(e["choices"] for e in events[:-1])  # include_usage false: no usage chunk
    assert upstream.requests[0].json == {
        **body,
        "stream_options": {"include_usage": True, "future_option": 1},
    }


def test_the_builtin_mock_provider_streams_and_meters_too(
    make_app: Callable[..., Flask], db_url: str
) -> None:
    client = make_app(base_config(db_url)).test_client()
    body = {"model": "gpt-3.5-turbo", "messages": MESSAGES, "stream": True}
    events = sse_events(client.post("/chat/completions", json=body, headers=MASTER).get_data())
    text = content_of(events)
    assert text
    row = SpendLog.get()
    assert row.completion_tokens == len(text.split())
    assert row.prompt_tokens == estimate_prompt_tokens(body, "chat")
    assert row.spend > 0


def test_an_upstream_that_stalls_mid_stream_ends_with_an_error_event(
    client: FlaskClient, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> None:
    upstream.stream_chunk_delay = 3  # the model's timeout is 1 s: the second chunk is late
    resp = client.post("/chat/completions", json=STREAM, headers=MASTER)
    assert resp.status_code == 200  # the status was sent with the first chunk
    events = sse_events(resp.get_data())
    upstream.reset()
    assert events[-1]["error"]["type"] == "timeout"
    assert recorder.outcomes == ["failed"]
    # Only the role chunk (no text) reached the client: nothing to charge.
    assert SpendLog.select().count() == 0


def test_closing_the_response_early_charges_what_was_relayed(
    client: FlaskClient, upstream: MockOpenAI, recorder: OutcomeRecorder
) -> None:
    # Events spaced as a model generates them (a burst that arrived at once is
    # relayed as one part, so there would be no "mid-way" to leave at).
    upstream.stream_chunk_delay = 0.02
    resp = client.post("/chat/completions", json=STREAM, headers=MASTER, buffered=False)
    assert resp.status_code == 200
    got = b""
    for piece in resp.response:
        got += piece if isinstance(piece, bytes) else piece.encode()
        if got.count(b'"content": " ') >= 3:
            break
    resp.close()  # what the WSGI server does when the client goes away
    row = SpendLog.get()
    assert row.status == "disconnected"
    relayed = content_of(sse_events(got))
    assert row.completion_tokens == (len(relayed) + 3) // 4
    assert row.completion_tokens < len(DEFAULT_CONTENT.split())
    assert recorder.outcomes == ["disconnected"]


def azure_stream_client(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI, api_version: str
) -> FlaskClient:
    entry = {
        "model_name": "azure-gpt",
        "litellm_params": {
            "model": "azure/my-deployment",
            "api_base": upstream.root_url,
            "api_key": "azure-key",
            "api_version": api_version,
        },
    }
    return make_app(base_config(db_url, model_list=[entry])).test_client()


def test_old_azure_api_versions_get_no_stream_options_and_are_metered_from_the_text(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI
) -> None:
    # The seeds' Azure config; Azure refuses stream_options before 2024-09-01.
    client = azure_stream_client(make_app, db_url, upstream, "2023-07-01-preview")
    body = {"model": "azure-gpt", "messages": MESSAGES, "stream": True}
    events = sse_events(client.post("/chat/completions", json=body, headers=MASTER).get_data())
    assert content_of(events) == DEFAULT_CONTENT
    assert "stream_options" not in upstream.requests[0].json
    row = SpendLog.get()
    assert row.status == "success"
    assert row.prompt_tokens == estimate_prompt_tokens(body, "chat")
    assert row.completion_tokens == (len(DEFAULT_CONTENT) + 3) // 4


def test_old_azure_api_versions_still_get_what_the_client_asked_for(
    make_app: Callable[..., Flask], db_url: str, upstream: MockOpenAI
) -> None:
    client = azure_stream_client(make_app, db_url, upstream, "2024-06-01")
    body = {
        "model": "azure-gpt",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    resp = client.post("/chat/completions", json=body, headers=MASTER)
    assert sse_events(resp.get_data())[-2]["usage"]  # the usage chunk the client asked for
    assert upstream.requests[0].json["stream_options"] == {"include_usage": True}
    assert SpendLog.get().completion_tokens == len(DEFAULT_CONTENT.split())  # exact usage


@pytest.mark.parametrize(
    ("version", "injected"),
    [("2024-09-01-preview", True), ("2024-10-21", True), ("v1", True),
     ("2024-08-01-preview", False), ("2023-05-15", False)],
)  # fmt: skip
def test_newer_azure_api_versions_get_stream_options_and_exact_usage(
    make_app: Callable[..., Flask],
    db_url: str,
    upstream: MockOpenAI,
    version: str,
    injected: bool,
) -> None:
    client = azure_stream_client(make_app, db_url, upstream, version)
    body = {"model": "azure-gpt", "messages": MESSAGES, "stream": True}
    events = sse_events(client.post("/chat/completions", json=body, headers=MASTER).get_data())
    assert all(e["choices"] for e in events[:-1])
    assert ("stream_options" in upstream.requests[0].json) is injected
    exact = len(DEFAULT_CONTENT.split())
    assert SpendLog.get().completion_tokens == (
        exact if injected else (len(DEFAULT_CONTENT) + 3) // 4
    )


# --- the relay on its own ---------------------------------------------------


def test_relay_reassembles_events_split_across_chunks() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    stream = (
        b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
        b'data: {"choices": [{"delta": {"content": "lo"}}]}\r\n\r\n'
        b'data: {"choices": [], "usage": ' + json.dumps(usage).encode() + b"}\n\n"
        b"data: [DONE]\n\n"
    )
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    relay = StreamRelay(iter(pieces), relay_usage=False)
    out = b"".join(relay)
    assert relay.finished
    assert relay.text_chars == 5
    assert relay.usage is not None
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (3, 2)
    assert b'"usage"' not in out
    assert out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"data: ") == 3


@pytest.mark.parametrize("cut", ["one burst", "event by event", "every 5 bytes"])
def test_relay_meters_a_burst_of_events_as_it_meters_them_one_by_one(cut: str) -> None:
    texts = ["Hé", "llo", " wörld"]
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    events = [
        b"data: " + json.dumps({"choices": [{"delta": {"content": t}}]}).encode() + b"\n\n"
        for t in texts
    ]
    usage_event = b'data: {"choices": [], "usage": ' + json.dumps(usage).encode() + b"}\n\n"
    stream = b"".join([*events, usage_event, b": keep-alive\n\n", b"data: [DONE]\n\n"])
    parts = {
        "one burst": [stream],
        "event by event": [*events, usage_event, b": keep-alive\n\n", b"data: [DONE]\n\n"],
        "every 5 bytes": [stream[i : i + 5] for i in range(0, len(stream), 5)],
    }[cut]
    relay = StreamRelay(iter(parts), relay_usage=False)
    out = b"".join(relay)
    # Everything but the usage chunk the client did not ask for, byte for byte.
    assert out == stream.replace(usage_event, b"")
    assert relay.finished and relay.usage is not None
    assert (relay.usage.prompt_tokens, relay.usage.completion_tokens) == (3, 4)
    assert relay.text_chars == len("".join(texts))


@pytest.mark.parametrize("cut", ["one burst", "event by event", "in bursts"])
def test_relay_counts_a_burst_with_no_usage_whatever_its_events_hold(cut: str) -> None:
    """Text that looks like the stream's end or a usage key, one event's data on two
    lines, an event with a name, a comment, a legacy completion and a broken chunk, in
    bursts: relayed as they came, the text counted as when they come one by one."""

    def chunk(data: dict[str, Any]) -> bytes:
        return b"data: " + json.dumps(data).encode() + b"\n\n"

    texts = ["data: [DONE] is the end", ' "usage": {"total_tokens": 9}', "é", "last"]
    events = [
        chunk({"choices": [{"delta": {"content": texts[0]}}]}),
        # One event's data on two lines (the client joins them with a newline).
        b'data: {"choices": [{"delta":\ndata: {"content": "split"}}]}\n\n',
        chunk({"choices": [{"delta": {"content": texts[1]}}]}),
        b"event: note\n" + chunk({"choices": []}),
        chunk({"choices": [{"delta": {"content": texts[2]}}]}),
        b": a comment\n\n",
        chunk({"choices": [{"text": "legacy"}]}),
        b"data: {broken\n\n",
        chunk({"choices": [{"delta": {"content": texts[3]}}]}),
        b"data: [DONE]\n\n",
    ]
    parts = {
        "one burst": [b"".join(events)],
        "event by event": events,
        "in bursts": [b"".join(events[0:3]), b"".join(events[3:5]), b"".join(events[5:])],
    }[cut]
    relay = StreamRelay(iter(parts))
    assert b"".join(relay) == b"".join(events)
    assert relay.usage is None
    assert relay.text_chars == len("".join(texts)) + len("split") + len("legacy")


@pytest.mark.parametrize("words", [3, 12000])  # 12000: past what the meter keeps uncounted
def test_relay_counts_every_chunk_it_relayed_without_parsing_them_on_the_way(words: int) -> None:
    text = ["é" if i % 7 == 0 else f" w{i}" for i in range(words)]
    # With include_usage OpenAI sends "usage": null in every chunk but the last.
    chunks = [
        b"data: "
        + json.dumps({"choices": [{"delta": {"content": t}}], "usage": None}).encode()
        + b"\n\n"
        for t in text
    ]
    chunks.append(b'data: {"choices": [{"delta": {"content": "usage"}}], "usage" : null}\n\n')
    chunks.append(b'data: {"choices": [{"delta": {"content": "\\"q\\""}, "text": "ab"}]}\n\n')
    chunks.append(b"data: {not json}\n\n")  # relayed as it came, never counted
    relay = StreamRelay(iter(chunks), relay_usage=False)
    out = b"".join(relay)
    assert out == b"".join(chunks)
    assert relay.usage is None
    assert relay.text_chars == len("".join(text)) + len("usage") + len('"q"') + len("ab")
    assert relay.text_chars == len("".join(text)) + 10  # counted once


def test_relay_meters_an_upstream_that_answered_plain_json() -> None:
    answer = {
        "choices": [{"message": {"content": "hi"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1},
    }
    relay = StreamRelay(iter([json.dumps(answer).encode()]))
    assert b"".join(relay) == json.dumps(answer).encode()
    assert relay.usage is not None and relay.usage.prompt_tokens == 4


# --- under real gunicorn (slow) ----------------------------------------------


@pytest.fixture
def ledger(db_url: str) -> Iterator[str]:
    """The test's database, readable from this process while gunicorn writes it."""
    init_database(db_url)
    migrate()
    yield db_url
    database.close()


def read_rows() -> list[SpendLog]:
    with database.connection_context():
        return list(SpendLog.select())


WORDS = len(DEFAULT_CONTENT.split())  # the mock's answer (mock_response is not forwarded)


@pytest.mark.slow
def test_first_chunk_reaches_the_client_before_the_upstream_finishes(
    upstream: MockOpenAI, tmp_path: Path
) -> None:
    # A timing test, not a storage one: SQLite only.
    db_url = f"sqlite:///{tmp_path / 'timing.db'}"
    init_database(db_url)
    delay = 0.15
    upstream.stream_chunk_delay = delay
    config = base_config(db_url, model_list=[openai_model("gpt-4o-mini", upstream.base_url)])
    with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
        sent = time.monotonic()
        arrivals: list[tuple[float, bytes]] = []
        with requests.post(
            f"{server.url}/chat/completions", json=STREAM, headers=MASTER, stream=True, timeout=30
        ) as resp:
            # Times from here: the headers come with the upstream's first (role) chunk.
            # The call's own start-up (auth, database, the upstream connection) is
            # before it, and takes what the machine's load makes it take.
            started = time.monotonic()
            assert resp.status_code == 200
            for chunk in resp.iter_content(chunk_size=None):
                arrivals.append((time.monotonic() - started, chunk))
        # Upstream: role chunk, one chunk per word, finish, usage: WORDS + 2 gaps of `delay`.
        assert arrivals[-1][0] + (started - sent) >= (WORDS + 2) * delay * 0.9
        total = arrivals[-1][0]
        first_word = DEFAULT_CONTENT.split()[0]
        first_text = next(t for t, c in arrivals if f'"content": "{first_word}"'.encode() in c)
        assert first_text < 3 * delay, arrivals
        assert first_text < total / 3
        assert len(arrivals) >= WORDS  # relayed piece by piece, not in one buffer
        rows = wait_until(read_rows, timeout=10)
        assert rows[0].status == "success"
        assert rows[0].completion_tokens == WORDS


@pytest.mark.slow
def test_a_client_that_hangs_up_mid_stream_is_charged_for_what_it_got(
    ledger: str, upstream: MockOpenAI, tmp_path: Path
) -> None:
    upstream.stream_chunk_delay = 0.5  # about 6 s of stream if nobody stops it
    config = base_config(ledger, model_list=[openai_model("gpt-4o-mini", upstream.base_url)])
    with ProxyServer(config, tmp_path, workers=1, threads=4) as server:
        body = {**STREAM, "user": "quitter"}
        received = b""
        resp = requests.post(
            f"{server.url}/chat/completions", json=body, headers=MASTER, stream=True, timeout=30
        )
        started = time.monotonic()  # the headers came with the upstream's first chunk
        for chunk in resp.iter_content(chunk_size=None):
            received += chunk
            if received.count(b'"content": " ') >= 2:  # two words after the first
                break
        resp.close()  # hang up mid-stream
        rows = wait_until(read_rows, timeout=15)
        (row,) = rows
        assert row.status == "disconnected"
        assert time.monotonic() - started < (WORDS + 2) * 0.5  # before the upstream was done
        assert row.end_user == "quitter"
        assert row.prompt_tokens == chat_prompt_tokens(MESSAGES)
        # Charged from the text relayed (4 characters a token), never for the whole answer.
        full = len(DEFAULT_CONTENT.split())
        assert 1 <= row.completion_tokens < full
        assert row.spend > 0
        # The proxy hung up on the upstream too, instead of reading the rest of the stream.
        wait_until(lambda: upstream.aborted_streams >= 1, timeout=10)
        with database.connection_context():
            assert Customer.get_by_id("quitter").spend == pytest.approx(row.spend)
