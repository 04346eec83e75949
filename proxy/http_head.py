"""HTTP/1.1 on the wire for :mod:`proxy.keepalive`: a request's head as bytes,
an answer's head parsed, its body framed as it arrives.

Why not http.client: it parses every header of an answer through the ``email``
package (a parser object, a policy, a feed per line), about 120 us of an
upstream call and a third of a webhook POST's CPU on the benchmark's machine,
and writes a request's head and body in two writes. Here a request's head is
built as http.client builds it (same order, same checks, same refusals of what
could split a header); of an answer's headers only the ones that frame its
body or its connection are looked at (``Content-Length``,
``Transfer-Encoding``, ``Connection``), the rest kept as text for a content
coding to be undone. tests/upstream/test_keepalive_answers.py holds every
framing, broken ones included, against urllib3's own reading.
"""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

# What http.client refuses in a request target, a header name and a header value.
_BAD_TARGET = re.compile("[\x00-\x20\x7f]").search
_HEADER_NAME = re.compile(r"[^:\s][^:\r\n]*").fullmatch
_BAD_HEADER_VALUE = re.compile(r"\n(?![ \t])|\r(?![ \t\n])").search
# http.client's limits on an answer's head: a line's length, the number of headers.
MAX_LINE = 65536
MAX_HEADERS = 100
# Answers that never have a body (RFC 9110): whatever their headers say.
_NO_BODY = {204, 304}
# Methods http.client gives a "Content-Length: 0" when they carry no body.
_BODY_METHODS = {"PATCH", "POST", "PUT"}


class Peer(Protocol):
    """What the Host header is made of (an http.client connection has these)."""

    host: str
    port: int
    default_port: int


def host_header(peer: Peer) -> str:
    """The Host header's value as http.client sends it: IDNA for a name that is
    not ASCII, brackets around an IPv6 address, the port unless the scheme's."""
    host = peer.host
    try:
        text = host.encode("ascii").decode("ascii")
    except UnicodeEncodeError:
        text = host.encode("idna").decode("ascii")
    if ":" in host:
        text = f"[{text}]"
    return text if peer.port == peer.default_port else f"{text}:{peer.port}"


def request_head(
    peer: Peer,
    method: str,
    target: str,
    body: bytes | None,
    headers: Mapping[str, str],
    default_user_agent: str,
) -> bytes:
    """The head http.client's ``request(method, target, body, headers)`` writes
    (``Host`` and ``Accept-Encoding: identity`` unless given, ``Content-Length``
    unless given or a bodiless GET, HEAD or DELETE,
    then ``User-Agent`` when not given and the headers in their order).
    A target or header that http.client refuses raises the same ``ValueError``
    (``http.client.InvalidURL`` for the target)."""
    if _BAD_TARGET(target):
        raise http.client.InvalidURL(f"URL can't contain control characters. {target!r}")
    names = {name.lower() for name in headers}
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in names:
        lines.append(f"Host: {host_header(peer)}")
    if "accept-encoding" not in names:
        lines.append("Accept-Encoding: identity")
    if "content-length" not in names and (body is not None or method.upper() in _BODY_METHODS):
        lines.append(f"Content-Length: {len(body or b'')}")
    if "user-agent" not in names:
        lines.append(f"User-Agent: {default_user_agent}")
    for name, value in headers.items():
        if not _HEADER_NAME(name):
            raise ValueError(f"Invalid header name {name!r}")
        if _BAD_HEADER_VALUE(value):
            raise ValueError(f"Invalid header value {value!r}")
        lines.append(f"{name}: {value}")
    lines.append("\r\n")
    # The request line in ASCII, the headers in Latin-1, as http.client encodes them.
    return lines[0].encode("ascii") + "\r\n".join(["", *lines[1:]]).encode("latin-1")


class Reader:
    """An answer's bytes from ``sock`` as lines and exact lengths (a buffer of
    what arrived beyond what was asked for)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        part = self.sock.recv(65536)
        self.buffer += part
        return bool(part)

    def head(self) -> list[bytes]:
        """One head's lines (the status line first), without their line ends."""
        start = 0
        while True:
            end, gap = self.buffer.find(b"\r\n\r\n", start), 4
            bare = self.buffer.find(b"\n\n", start)  # bare line ends, which http.client takes
            if bare >= 0 and (end < 0 or bare < end):
                end, gap = bare, 2
            if end >= 0:
                break
            if len(self.buffer) > MAX_LINE * (MAX_HEADERS + 1):
                raise http.client.LineTooLong("header line")
            start = max(0, len(self.buffer) - 3)
            if not self._fill():
                raise http.client.RemoteDisconnected(
                    "Remote end closed connection without response"
                )
        lines = [line.rstrip(b"\r") for line in bytes(self.buffer[:end]).split(b"\n")]
        del self.buffer[: end + gap]
        if any(len(line) > MAX_LINE for line in lines):
            raise http.client.LineTooLong("header line")
        if len(lines) > MAX_HEADERS + 1:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        return lines

    def line(self) -> bytes:
        start = 0
        while (end := self.buffer.find(b"\n", start)) < 0:
            if len(self.buffer) > MAX_LINE:
                raise http.client.LineTooLong("chunk size")
            start = len(self.buffer)
            if not self._fill():
                raise http.client.IncompleteRead(b"")
        line = bytes(self.buffer[: end + 1])
        del self.buffer[: end + 1]
        return line

    def exact(self, size: int) -> bytes:
        while len(self.buffer) < size:
            if not self._fill():
                raise http.client.IncompleteRead(bytes(self.buffer), size - len(self.buffer))
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def _take(self, most: int) -> bytes:
        """Up to ``most`` bytes: from the buffer, else what one read brings (b"" at the end)."""
        if not self.buffer and not self._fill():
            return b""
        part = bytes(self.buffer[:most])
        del self.buffer[: len(part)]
        return part

    def parts(self, size: int) -> Iterator[bytes]:
        """``size`` bytes, as they arrive."""
        while size > 0:
            part = self._take(min(size, 65536))
            if not part:
                raise http.client.IncompleteRead(b"", size)
            size -= len(part)
            yield part

    def parts_to_the_end(self) -> Iterator[bytes]:
        """Everything until the server closes the connection, as it arrives."""
        while part := self._take(65536):
            yield part

    def chunk_parts(self) -> Iterator[bytes]:
        """A chunked body's data as it arrives (chunk extensions and trailers
        dropped). A chunk that has wholly arrived is handed over together with
        the whole chunks that arrived with it, as one part: the relay then
        passes a burst of events on in one go (one write to the client)
        instead of one by one, and nothing that has arrived is held back."""
        while True:
            size = _chunk_size(self.line())
            if size == 0:
                while self.line() not in (b"\r\n", b"\n"):
                    pass  # trailers
                return
            if len(self.buffer) < size + 2:
                yield from self.parts(size)  # still arriving: pass it on as it comes
                if self.exact(2) != b"\r\n":
                    raise http.client.IncompleteRead(b"")
                continue
            yield self._whole_chunks(size)

    def _whole_chunks(self, size: int) -> bytes:
        """The data of the chunk whose size line was just read (all of it and its line
        end in the buffer) and of every whole chunk after it in the buffer (the last,
        zero-size chunk left to :meth:`chunk_parts`)."""
        buffer = bytes(self.buffer)
        if buffer[size : size + 2] != b"\r\n":
            raise http.client.IncompleteRead(b"")
        parts = [buffer[:size]]
        taken = size + 2
        while (end := buffer.find(b"\n", taken)) >= 0:
            try:
                size = _chunk_size(buffer[taken : end + 1])
            except http.client.IncompleteRead:
                break  # left for chunk_parts to refuse
            data_end = end + 1 + size
            if size == 0 or buffer[data_end : data_end + 2] != b"\r\n":
                break  # the last chunk, or one still arriving
            parts.append(buffer[end + 1 : data_end])
            taken = data_end + 2
        del self.buffer[:taken]
        return parts[0] if len(parts) == 1 else b"".join(parts)


def _chunk_size(line: bytes) -> int:
    """A chunk's size from its size line (extensions dropped), as http.client reads it."""
    try:
        size = int(line.split(b";", 1)[0].strip(), 16)
    except ValueError:
        raise http.client.IncompleteRead(b"") from None
    if size < 0:
        raise http.client.IncompleteRead(b"")
    return size


@dataclass
class Head:
    """What an answer's head says about the answer and its connection."""

    status: int
    keep: bool  # HTTP/1.1 and no ``Connection: close``
    length: int | None  # a valid Content-Length (one value, or the same twice)
    odd_length: bool  # a Content-Length that is not one valid number
    transfer_coding: bytes | None  # the last transfer coding, lower case
    headers: list[tuple[str, str]]  # (lower-case name, value), in order

    def content_coding(self) -> str | None:
        """The answer's ``Content-Encoding`` unless none or ``identity``."""
        coding = next((v for k, v in self.headers if k == "content-encoding"), "")
        return None if coding.strip().lower() in ("", "identity") else coding

    def has_body(self, method: str) -> bool:
        return method != "HEAD" and self.status not in _NO_BODY

    def reusable(self, method: str) -> bool:
        """Whether the connection can carry another request once the body is read:
        the server keeps it open and the body's end is known without the
        connection's end (none, chunked, or one valid Content-Length)."""
        if not self.keep:
            return False
        if not self.has_body(method):
            return True
        if self.transfer_coding is not None:
            return self.transfer_coding == b"chunked"
        return self.length is not None


def body_parts(reader: Reader, head: Head, method: str) -> Iterator[bytes]:
    """The answer's body as it arrives, its content coding not undone. Framed as
    RFC 9112 says: none for HEAD, 1xx, 204 and 304; a chunked transfer coding;
    else a Content-Length; else the connection's end. A Content-Length that is
    not one valid number is a protocol error, as a short body is
    (``IncompleteRead``)."""
    if not head.has_body(method):
        return
    if head.transfer_coding == b"chunked":
        yield from reader.chunk_parts()
    elif head.transfer_coding is None and head.odd_length:
        raise http.client.HTTPException("Content-Length is not one valid number")
    elif head.transfer_coding is None and head.length is not None:
        yield from reader.parts(head.length)
    else:
        yield from reader.parts_to_the_end()


def read_head(reader: Reader) -> Head:
    """The final answer's head, after any interim 1xx answers."""
    while True:
        lines = reader.head()
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(repr(lines[0]))
        status = int(code)
        if not 100 <= status < 200 or status == 101:
            break  # else an interim answer (100 Continue, 103 Early Hints): the final follows
    head = Head(status, version == b"HTTP/1.1" and status != 101, None, False, None, [])
    length: bytes | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue  # a folded line or no header at all: nothing that frames the body
        name = name.strip().lower()
        value = value.strip()
        head.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if name == b"content-length":
            head.odd_length = head.odd_length or (length is not None and length != value)
            length = value
        elif name == b"transfer-encoding":
            head.transfer_coding = value.rsplit(b",", 1)[-1].strip().lower()
        elif name == b"connection":
            close = b"close" in (t.strip().lower() for t in value.split(b","))
            head.keep = head.keep and not close
    if length is not None:
        if length.isdigit() and not head.odd_length:
            head.length = int(length)
        else:
            head.odd_length = True
    return head
