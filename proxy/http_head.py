"""An HTTP/1.1 request's head as bytes, and an answer read only as far as its
status: the exchange of :meth:`proxy.keepalive.KeepAliveOrigin.post_for_status`.

Why not http.client for it: its answer parses every header through the
``email`` package (a parser object, a policy, a feed per line), which was a
third of the CPU of a webhook POST whose caller wants the status alone, and it
writes head and body in two writes. Here the head is built as http.client
would send it (same order, same checks, same refusals of what could split a
header) and the answer is read as far as the status and what decides whether
its connection can carry the next request: ``Content-Length``,
``Transfer-Encoding`` and ``Connection``.
"""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Mapping
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
    body: bytes,
    headers: Mapping[str, str],
    default_user_agent: str,
) -> bytes:
    """The head http.client's ``request(method, target, body, headers)`` writes
    (``Host`` and ``Accept-Encoding: identity`` unless given, ``Content-Length``,
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
    if "content-length" not in names:
        lines.append(f"Content-Length: {len(body)}")
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


def _head(sock: socket.socket, buffer: bytes) -> tuple[list[bytes], bytes]:
    """One answer head's lines (status line first) and the bytes after it."""
    while True:
        end, gap = buffer.find(b"\r\n\r\n"), 4
        bare = buffer.find(b"\n\n")  # bare line ends, which http.client accepts too
        if bare >= 0 and (end < 0 or bare < end):
            end, gap = bare, 2
        if end >= 0:
            lines = [line.rstrip(b"\r") for line in buffer[:end].split(b"\n")]
            if any(len(line) > MAX_LINE for line in lines):
                raise http.client.LineTooLong("header line")
            if len(lines) > MAX_HEADERS + 1:
                raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
            return lines, buffer[end + gap :]
        if len(buffer) > MAX_LINE * (MAX_HEADERS + 1):
            raise http.client.LineTooLong("header line")
        part = sock.recv(65536)
        if not part:
            raise http.client.RemoteDisconnected("Remote end closed connection without response")
        buffer += part


def read_status(sock: socket.socket) -> tuple[int, bool]:
    """Read an answer from ``sock`` as far as its status (after any interim 1xx
    answers); then, when the connection can carry another request, its body to
    the end. Returns the status and whether the connection can be kept."""
    buffer = b""
    while True:
        lines, buffer = _head(sock, buffer)
        version, _, rest = lines[0].partition(b" ")
        code = rest[:3]
        if not version.startswith(b"HTTP/") or len(code) != 3 or not code.isdigit():
            raise http.client.BadStatusLine(repr(lines[0]))
        status = int(code)
        if not 100 <= status < 200 or status == 101:
            break  # else an interim answer (100 Continue, 103 Early Hints): the final follows
    keep = version == b"HTTP/1.1" and status != 101
    length: bytes | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t"):
            continue  # a folded line or no header at all: nothing that frames the body
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            keep = keep and (length is None or length == value)
            length = value
        elif name == b"transfer-encoding":
            keep = False  # chunked (or worse): read no further
        elif name == b"connection":
            keep = keep and b"close" not in (t.strip().lower() for t in value.split(b","))
    if status in _NO_BODY:
        return status, keep and not buffer
    if not keep or length is None or not length.isdigit() or len(buffer) > int(length):
        return status, False  # framed by the connection's end, or oddly: not reused
    missing = int(length) - len(buffer)
    while missing > 0:
        part = sock.recv(min(missing, 65536))
        if not part:
            raise http.client.IncompleteRead(b"", missing)
        missing -= len(part)
    return status, True
