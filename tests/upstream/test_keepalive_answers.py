"""KeepAliveOrigin.post_for_status (the webhook sender's POST, its answer read as far
as its status) and KeepAliveOrigin.fetch (an upstream call's whole answer), both
reading answers with proxy/http_head.py.

The oracle for the request's bytes is http.client itself and for the answers and
errors urllib3's ``urlopen`` (what the proxy sent its requests with before),
on the same server; the answers are raw bytes a scripted server writes, framed
every way HTTP/1.x allows, and the test reads the status and whether the next
POST reuses the connection."""

from __future__ import annotations

import gzip
import http.client
import random
import socket
import threading
import zlib
from collections.abc import Callable, Iterator

import pytest
import urllib3
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from proxy.http_head import Reader
from proxy.keepalive import KeepAliveOrigin, KeepAliveRoutes
from tests.support.raw_server import RawHTTPServer

BODY = '{"event": "spend_tracked", "customer_id": "krrish12", "note": "é"}'.encode()
HEADERS = {
    "User-Agent": "comptroller-webhook/1",
    "Content-Type": "application/json",
    "webhook-id": "01J9Z4T7",
}


class ScriptedServer(RawHTTPServer):
    """Answers the n-th request with ``answers[n]``, and hangs up after the answers
    whose index is in ``hang_up``."""

    def __init__(self, answers: list[bytes | None], hang_up: frozenset[int] = frozenset()) -> None:
        super().__init__(answers.__getitem__, hang_up.__contains__)


@pytest.fixture
def scripted() -> Iterator[type[ScriptedServer]]:
    servers: list[ScriptedServer] = []

    class Tracked(ScriptedServer):
        def __init__(
            self, answers: list[bytes | None], hang_up: frozenset[int] = frozenset()
        ) -> None:
            super().__init__(answers, hang_up)
            servers.append(self)

    yield Tracked
    for server in servers:
        server.close()


def origin_for(server: ScriptedServer, path: str = "/hook?team=a") -> tuple[KeepAliveOrigin, str]:
    return KeepAliveRoutes(urllib3.PoolManager(retries=False), maxsize=1)(
        f"http://127.0.0.1:{server.port}{path}"
    )


def post(origin: KeepAliveOrigin, target: str, timeout: float = 5.0) -> int:
    return origin.post_for_status(target, BODY, HEADERS, connect_timeout=5.0, read_timeout=timeout)


def _by_http_client(
    server: ScriptedServer, method: str, target: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, bytes]:
    """The request as http.client sends it (the oracle for the bytes), and its answer."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request(method, target, body, headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


OK_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def test_the_request_is_the_one_http_client_sends(scripted: type[ScriptedServer]) -> None:
    server = scripted([OK_LENGTH, OK_LENGTH])
    origin, target = origin_for(server)
    assert _by_http_client(server, "POST", target, BODY, HEADERS) == (200, b"{}")
    assert post(origin, target) == 200
    by_http_client, ours = server.requests
    assert ours == by_http_client
    assert ours.startswith(b"POST /hook?team=a HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_content_length_answer_keeps_the_connection(scripted: type[ScriptedServer]) -> None:
    big = b"x" * 200_000  # read to its end over several reads, nothing left for the next POST
    answers: list[bytes | None] = [
        OK_LENGTH,
        b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(big) + big,
        b"HTTP/1.1 204 No Content\r\nDate: Mon, 07 Dec 2026 19:00:00 GMT\r\n\r\n",
        b"HTTP/1.1 202 Accepted\nContent-Length: 0\n\n",  # bare line ends
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK_LENGTH,
        OK_LENGTH,
    ]
    server = scripted(answers)
    origin, target = origin_for(server)
    assert [post(origin, target) for _ in answers] == [200, 201, 204, 202, 200, 200]
    assert server.accepted == 1
    assert origin.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n\r\n{}",  # framed by the connection's end
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{}",  # more than it says
    ],
    ids=["chunked", "close", "http-1.0", "no-length", "two-lengths", "overlong"],
)
def test_any_other_framing_gives_the_status_and_a_new_connection(
    scripted: type[ScriptedServer], answer: bytes
) -> None:
    server = scripted([answer, OK_LENGTH])
    origin, target = origin_for(server)
    assert post(origin, target) == 200
    assert post(origin, target) == 200
    assert server.accepted == 2


def test_error_statuses_are_returned(scripted: type[ScriptedServer]) -> None:
    server = scripted(
        [
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops",
            b"HTTP/1.1 301 Moved Permanently\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
        ]
    )
    origin, target = origin_for(server)
    assert post(origin, target) == 500
    assert post(origin, target) == 301  # not followed: the sender counts it a failure


@pytest.mark.parametrize(
    "answer",
    [
        None,
        b"garbage that is not http\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # then the server hangs up
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ],
    ids=["closed", "garbage", "truncated-body", "truncated-head"],
)
def test_broken_answers_are_urllib3_protocol_errors(
    scripted: type[ScriptedServer], answer: bytes | None
) -> None:
    server = scripted([answer, OK_LENGTH], hang_up=frozenset({0}))
    origin, target = origin_for(server)
    with pytest.raises(ProtocolError):
        post(origin, target)
    assert post(origin, target) == 200  # on a new connection
    assert server.accepted == 2


@pytest.fixture
def silent_origin() -> Iterator[tuple[KeepAliveOrigin, str]]:
    """An origin that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    yield KeepAliveRoutes(urllib3.PoolManager(), maxsize=1)(
        f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    )
    listener.close()


def test_a_silent_receiver_is_a_read_timeout(silent_origin: tuple[KeepAliveOrigin, str]) -> None:
    origin, target = silent_origin
    with pytest.raises(ReadTimeoutError):
        post(origin, target, timeout=0.2)


@pytest.mark.parametrize(
    "headers",
    [
        {"webhook-id": "a\r\nX-Injected: 1"},
        {"bad:name": "x"},
        {"X-Ok": "line\nX-Injected: 1"},
    ],
)
def test_a_header_that_could_split_the_request_is_refused_as_http_client_does(
    scripted: type[ScriptedServer], headers: dict[str, str]
) -> None:
    server = scripted([OK_LENGTH])
    origin, target = origin_for(server)
    with pytest.raises(ValueError):
        _by_http_client(server, "POST", target, BODY, headers)
    with pytest.raises(ValueError):
        origin.post_for_status(target, BODY, headers, connect_timeout=5.0, read_timeout=5.0)
    assert server.requests == []


def test_a_target_with_control_characters_is_refused_as_http_client_does(
    scripted: type[ScriptedServer],
) -> None:
    server = scripted([OK_LENGTH])
    origin, _ = origin_for(server)
    with pytest.raises(http.client.InvalidURL):
        _by_http_client(server, "POST", "/hook x", BODY, HEADERS)
    with pytest.raises(ProtocolError) as ours:
        origin.post_for_status("/hook x", BODY, HEADERS, connect_timeout=5.0, read_timeout=5.0)
    assert type(ours.value.args[1]) is http.client.InvalidURL  # wrapped as urllib3 wraps it
    assert server.requests == []


# --- KeepAliveOrigin.fetch: the whole answer, against urllib3's urlopen -------------

GZIPPED = gzip.compress(b'{"object": "chat.completion"}')
ANSWERS = {
    "length": OK_LENGTH,
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5;ext=1\r\n{"a":\r\n3\r\n 1}\r\n0\r\nTrailer: x\r\n\r\n',
    "close-delimited": b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"a": 2}',
    "http-1.0": b'HTTP/1.0 200 OK\r\n\r\n{"a": 3}',
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
    % len(GZIPPED)
    + GZIPPED,
    "no-content": b"HTTP/1.1 204 No Content\r\n\r\n",
    "error": b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\n"
    b"Content-Length: 7\r\n\r\nslow up",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\n" + OK_LENGTH,
    "bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\n{}",
    "short-body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
    "short-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{}",
    "bad-chunk-size": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    "garbage": b"not http at all\r\n\r\n",
    "nothing": b"",
}


def _outcome(call: Callable[[], tuple[int, bytes]]) -> tuple[int, bytes] | type[BaseException]:
    try:
        return call()
    except urllib3.exceptions.HTTPError as err:
        return type(err)


@pytest.mark.parametrize("name", list(ANSWERS))
def test_fetch_reads_every_answer_as_urllib3_does(
    scripted: type[ScriptedServer], name: str
) -> None:
    answer = ANSWERS[name]

    def by_urllib3() -> tuple[int, bytes]:
        server = scripted([answer], hang_up=frozenset({0}))
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
        sent = pool.urlopen(
            "POST", "/hook", body=BODY, headers=HEADERS, retries=False, redirect=False
        )
        return sent.status, sent.data

    def by_fetch() -> tuple[int, bytes]:
        server = scripted([answer], hang_up=frozenset({0}))
        origin, target = origin_for(server)
        return origin.fetch("POST", target, BODY, HEADERS, 5.0, 5.0)

    expected = _outcome(by_urllib3)
    assert _outcome(by_fetch) == expected
    if name in ("length", "chunked", "gzip", "close-delimited", "no-content"):
        assert isinstance(expected, tuple) and expected[0] in (200, 204)  # the oracle read it


def test_fetch_keeps_the_connection_after_framed_answers(scripted: type[ScriptedServer]) -> None:
    framed = [ANSWERS[n] for n in ("length", "chunked", "gzip", "no-content", "error", "interim")]
    server = scripted([*framed, OK_LENGTH])
    origin, target = origin_for(server)
    statuses = [origin.fetch("POST", target, BODY, HEADERS, 5.0, 5.0)[0] for _ in range(7)]
    assert statuses == [200, 200, 200, 204, 429, 200, 200]
    assert server.accepted == 1


def test_fetch_sends_no_length_for_a_bodiless_get(scripted: type[ScriptedServer]) -> None:
    server = scripted([OK_LENGTH, OK_LENGTH])  # requests without a body
    origin, target = origin_for(server, "/v1/responses/resp_1")
    headers = {"User-Agent": "sdk/1", "Authorization": "Bearer sk-x"}
    _by_http_client(server, "GET", target, None, headers)
    assert origin.fetch("GET", target, None, headers, 5.0, 5.0) == (200, b"{}")
    by_http_client, ours = server.requests
    assert ours == by_http_client
    assert b"content-length" not in ours.lower()


def test_a_silent_upstream_is_a_read_timeout_for_fetch(
    silent_origin: tuple[KeepAliveOrigin, str],
) -> None:
    origin, target = silent_origin
    with pytest.raises(ReadTimeoutError):
        origin.fetch("POST", target, BODY, HEADERS, 5.0, 0.2)


# --- Answer.chunks: a streamed answer as it arrives ------------------------------------


def _sse_chunked(events: list[bytes]) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events) + b"0\r\n\r\n"


EVENTS = [b'data: {"n": %d, "text": "\xc3\xa9v\xc3\xa9nement"}\n\n' % i for i in range(5)]
EVENTS.append(b"data: [DONE]\n\n")


def _gzip_stream(events: list[bytes]) -> list[bytes]:
    """Each event compressed and flushed on its own, as a server streaming gzip does."""
    packer = zlib.compressobj(wbits=31)
    parts = [packer.compress(e) + packer.flush(zlib.Z_SYNC_FLUSH) for e in events]
    parts[-1] += packer.flush()
    return parts


STREAMS = {
    "chunked": b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + _sse_chunked(EVENTS),
    "gzip-chunked": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + _sse_chunked(_gzip_stream(EVENTS)),
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(b"".join(EVENTS))
    + b"".join(EVENTS),
    "close-delimited": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"".join(EVENTS),
    "broken-mid-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    + _sse_chunked(EVENTS)[:40],
}


@pytest.mark.parametrize("name", list(STREAMS))
def test_a_stream_reads_as_urllib3_streams_it(scripted: type[ScriptedServer], name: str) -> None:
    answer = STREAMS[name]

    def by_urllib3() -> tuple[int, bytes]:
        server = scripted([answer], hang_up=frozenset({0}))
        pool = urllib3.HTTPConnectionPool("127.0.0.1", server.port, maxsize=1)
        sent = pool.urlopen(
            "POST", "/v1/chat/completions", body=BODY, headers=HEADERS, retries=False,
            preload_content=False,
        )  # fmt: skip
        return sent.status, b"".join(sent.stream(65536, decode_content=True))

    def by_chunks() -> tuple[int, bytes]:
        server = scripted([answer], hang_up=frozenset({0}))
        origin, target = origin_for(server, "/v1/chat/completions")
        sent = origin.send("POST", target, BODY, HEADERS, 5.0, 5.0)
        try:
            return sent.status, b"".join(sent.chunks())
        finally:
            sent.release()

    expected = _outcome(by_urllib3)
    assert _outcome(by_chunks) == expected
    if not name.startswith("broken"):
        assert expected == (200, b"".join(EVENTS))  # the oracle read it


def _read_in_lockstep(head: bytes, pieces: list[tuple[int, bytes]]) -> list[bytes]:
    """The parts ``Answer.chunks`` hands over from a server that sends ``head``, then
    each piece ``(after, wire)`` only once the reader has handed over ``after`` bytes
    of the body: a reader that waited for more than had arrived would time out."""
    handed = 0
    changed = threading.Condition()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(head)
            for after, wire in pieces:
                with changed:
                    if not changed.wait_for(lambda after=after: handed >= after, 5):
                        return
                conn.sendall(wire)

    threading.Thread(target=serve, daemon=True).start()
    parts = []
    try:
        origin, target = KeepAliveRoutes(urllib3.PoolManager(), maxsize=1)(
            f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
        )
        sent = origin.send("POST", target, BODY, HEADERS, 5.0, read_timeout=2.0)
        for part in sent.chunks():
            parts.append(part)
            with changed:
                handed += len(part)
                changed.notify_all()
        sent.release()
    finally:
        listener.close()
    return parts


@pytest.mark.parametrize("coded", [False, True], ids=["plain", "gzip"])
def test_each_event_is_relayed_before_the_next_is_sent(coded: bool) -> None:
    coding = b"Content-Encoding: gzip\r\n" if coded else b""
    head = b"HTTP/1.1 200 OK\r\n" + coding + b"Transfer-Encoding: chunked\r\n\r\n"
    wire = [b"%x\r\n%s\r\n" % (len(p), p) for p in (_gzip_stream(EVENTS) if coded else EVENTS)]
    before = [sum(len(e) for e in EVENTS[:i]) for i in range(len(EVENTS) + 1)]
    parts = _read_in_lockstep(
        head, [*zip(before[:-1], wire, strict=True), (before[-1], b"0\r\n\r\n")]
    )
    assert b"".join(parts) == b"".join(EVENTS)


def test_a_stream_read_to_its_end_keeps_the_connection(scripted: type[ScriptedServer]) -> None:
    server = scripted([STREAMS["chunked"], STREAMS["gzip-chunked"], OK_LENGTH])
    origin, target = origin_for(server, "/v1/chat/completions")
    for _ in range(2):
        sent = origin.send("POST", target, BODY, HEADERS, 5.0, 5.0)
        assert b"".join(sent.chunks()) == b"".join(EVENTS)
        sent.release()
    assert origin.fetch("POST", target, BODY, HEADERS, 5.0, 5.0) == (200, b"{}")
    assert server.accepted == 1


def test_chunks_that_arrived_together_are_handed_over_as_one_part() -> None:
    """A burst of whole chunks is one part (one write to the client downstream); a
    chunk still arriving is handed over as it comes, nothing held back."""
    burst = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in EVENTS[:3])
    half = b"%x\r\n%s" % (len(EVENTS[3]), EVENTS[3][:10])
    rest = EVENTS[3][10:] + b"\r\n" + _sse_chunked(EVENTS[4:])
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    handed_before_rest = len(b"".join(EVENTS[:3])) + 10
    parts = _read_in_lockstep(head, [(0, burst + half), (handed_before_rest, rest)])
    assert parts[0] == b"".join(EVENTS[:3])
    assert parts[1] == EVENTS[3][:10]
    assert b"".join(parts) == b"".join(EVENTS)


class _Trickle:
    """A socket whose reads return what was sent in pieces of the given sizes."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.sizes = data, sizes

    def recv(self, most: int) -> bytes:
        size = min(most, self.sizes.pop(0) if self.sizes else most)
        part, self.data = self.data[:size], self.data[size:]
        return part


@pytest.mark.parametrize("seed", range(40))
def test_chunks_read_in_any_pieces_give_the_body_and_leave_the_next_answer(seed: int) -> None:
    rng = random.Random(seed)
    chunks = [
        bytes(rng.choice(b"ab\r\n:{}") for _ in range(rng.randint(1, 40)))
        for _ in range(rng.randint(0, 8))
    ]
    body = b"".join(b"%x%s\r\n%s\r\n" % (len(c), rng.choice([b"", b";ext=1"]), c) for c in chunks)
    body += rng.choice([b"0\r\n\r\n", b"0\r\nTrailer: x\r\n\r\n"])
    after = b"HTTP/1.1 200 OK\r\n"  # the next answer on a kept connection
    # Pieces of a few bytes (a chunk split anywhere) up to a whole burst of chunks.
    pieces = [rng.choice([rng.randint(1, 8), rng.randint(20, 400)]) for _ in range(200)]
    reader = Reader(_Trickle(body + after, pieces))  # type: ignore[arg-type]
    parts = list(reader.chunk_parts())
    assert b"".join(parts) == b"".join(chunks)
    assert all(parts)
    assert bytes(reader.buffer) == after[: len(reader.buffer)]  # nothing of it taken
