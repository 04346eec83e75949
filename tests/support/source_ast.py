"""Parse a source file of ours for the tests that read the code's structure.

CPython 3.11 keeps the AST builder's recursion depth in state shared by every
thread (python/cpython#106905): ``ast.parse`` in a test can fail with
"SystemError: AST constructor recursion depth mismatch" when another thread
parses at the same moment, and any thread that formats a traceback does
(3.11's caret anchors: a mock server's thread printing a client's reset, a
proxy thread logging with ``exc_info``). Seen once in CI. Such a failure says
nothing about the file, so it is parsed again; a real syntax error still
fails at once.
"""

from __future__ import annotations

import ast
from pathlib import Path

_TRIES = 3


def parse_source(path: Path) -> ast.Module:
    text = path.read_text(encoding="utf-8")
    for attempt in range(_TRIES):
        try:
            return ast.parse(text, filename=str(path))
        except SystemError as err:
            if "recursion depth mismatch" not in str(err) or attempt == _TRIES - 1:
                raise
    raise AssertionError("unreachable")
