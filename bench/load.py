"""The load generator: ``wrk`` (Debian's package) driven by a generated Lua script.

wrk is an event-loop client in C with keep-alive connections, so at
concurrency 16 on two cores it takes a few percent of one core, where a
Python client would take a whole one. The script cycles through prebuilt
POST requests (one per end user), optionally stops after a number of
responses, and prints its summary as one JSON line (latencies in
microseconds from wrk's own histogram).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "BENCH_JSON "

_SCRIPT = r"""
local bodies = %(bodies)s
local headers = %(headers)s
local path = %(path)s
local limit = %(limit)d
local prepared = {}
local counter = 0
local seen = 0

function init(args)
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format("POST", path, headers, body)
  end
end

function request()
  counter = counter + 1
  return prepared[(counter %% #prepared) + 1]
end

%(response)s

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(marker)s{"requests": %%d, "duration_us": %%d, "status_errors": %%d, ' ..
    '"connect_errors": %%d, "read_errors": %%d, "write_errors": %%d, ' ..
    '"timeouts": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"mean_us": %%.1f, "max_us": %%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write,
    e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""

_STOP_AFTER = """
function response(status, headers, body)
  seen = seen + 1
  if seen >= limit then
    wrk.thread:stop()
  end
end
"""


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int  # non-2xx answers plus socket errors and timeouts
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal


def _lua_table(items: list[str]) -> str:
    return "{" + ", ".join(_lua_string(item) for item in items) + "}"


def wrk_script(path: str, bodies: list[str], headers: dict[str, str], stop_after: int = 0) -> str:
    header_table = (
        "{" + ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()) + "}"
    )
    return _SCRIPT % {
        "bodies": _lua_table(bodies),
        "headers": header_table,
        "path": _lua_string(path),
        "limit": stop_after,
        "response": _STOP_AFTER if stop_after else "",
        "marker": MARKER,
    }


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def parse_summary(output: str) -> LoadResult:
    for line in output.splitlines():
        if line.startswith(MARKER):
            raw: dict[str, Any] = json.loads(line[len(MARKER) :])
            errors = sum(
                int(raw[name])
                for name in ("status_errors", "connect_errors", "read_errors", "write_errors")
            ) + int(raw["timeouts"])
            return LoadResult(
                requests=int(raw["requests"]),
                seconds=raw["duration_us"] / 1e6,
                errors=errors,
                p50_ms=raw["p50_us"] / 1000,
                p90_ms=raw["p90_us"] / 1000,
                p99_ms=raw["p99_us"] / 1000,
                mean_ms=raw["mean_us"] / 1000,
                max_ms=raw["max_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")


def run_wrk(
    url: str,
    bodies: list[str],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    stop_after: int = 0,
) -> LoadResult:
    """Load ``url`` with ``connections`` keep-alive connections for ``seconds``.

    ``stop_after`` stops sending after that many responses, but wrk itself
    still lasts ``seconds`` (its main thread sleeps for the whole duration).
    """
    base, _, rest = url.partition("://")
    host, _, path = rest.partition("/")
    script = wrk_script("/" + path, bodies, headers, stop_after)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = Path(handle.name)
    try:
        cmd = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--timeout",
            "30s",
            "-s",
            str(script_path),
            f"{base}://{host}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    finally:
        script_path.unlink(missing_ok=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    return parse_summary(done.stdout)
