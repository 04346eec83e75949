"""A raw HTTP/1.1 server on 127.0.0.1, for answers no well-behaved server gives."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class RawHTTPServer:
    """Answers the n-th request (over all connections, from 0) with ``answer(n)``:
    raw bytes, or None to close the connection without a word; after an answer
    for which ``hang_up(n)`` holds it closes the connection. Records each request
    (its head, and its body by its Content-Length) and how many connections it
    accepted."""

    def __init__(
        self,
        answer: Callable[[int], bytes | None],
        hang_up: Callable[[int], bool] = lambda index: False,
    ) -> None:
        self.answer = answer
        self.hang_up = hang_up
        self.requests: list[bytes] = []
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    part = conn.recv(65536)
                    if not part:
                        return
                    data += part
                head, _, data = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(data) < length:
                    part = conn.recv(65536)
                    if not part:
                        return
                    data += part
                self.requests.append(head + b"\r\n\r\n" + data[:length])
                data = data[length:]
                index = len(self.requests) - 1
                answer = self.answer(index)
                if answer is None:
                    return
                conn.sendall(answer)
                if self.hang_up(index):
                    return

    def close(self) -> None:
        self.sock.close()
