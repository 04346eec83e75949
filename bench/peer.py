"""A peer gateway in the same run: ``python -m bench --peer litellm``.

The LiteLLM proxy (``litellm[proxy]`` at :data:`LITELLM_VERSION`) is installed
into its own virtual environment under ``~/.cache/comptroller-bench/`` (never
the project's; made on first use with pip), started with two uvicorn workers
on the benchmark's mock upstream, with a master key and no database (so
without spend tracking, budgets or rate limits), and loaded with the same
wrk phases as Comptroller. Its CPU is that of its whole process tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from bench import procstats
from bench.stack import MASTER_KEY, MODEL, UPSTREAM_KEY, free_port, wait_for

LITELLM_VERSION = "1.106.2"
VENVS = Path(os.environ.get("COMPTROLLER_BENCH_VENVS", Path.home() / ".cache/comptroller-bench"))


def litellm_venv() -> Path:
    """The peer's own virtual environment, made and filled on first use."""
    venv = VENVS / f"litellm-{LITELLM_VERSION}"
    binary = venv / "bin" / "litellm"
    if not binary.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"]
        subprocess.run(pip, check=True)
    return venv


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (uvicorn's workers and their helpers)."""
    found = [pid]
    for child in procstats.children(pid):
        found += descendants(child)
    return found


class LiteLLMPeer:
    """The LiteLLM proxy on the benchmark's upstream, for as long as the ``with`` lasts."""

    name = f"LiteLLM proxy {LITELLM_VERSION}"

    def __init__(self, workdir: Path, upstream_url: str, workers: int) -> None:
        self.workdir = workdir
        self.upstream_url = upstream_url
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def config(self) -> dict[str, Any]:
        model = {
            "model_name": MODEL,
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": f"{self.upstream_url}/v1",
                "api_key": UPSTREAM_KEY,
            },
        }
        return {"model_list": [model], "general_settings": {"master_key": MASTER_KEY}}

    def __enter__(self) -> LiteLLMPeer:
        venv = litellm_venv()
        config_path = self.workdir / "litellm.yaml"
        config_path.write_text(yaml.safe_dump(self.config()))
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"DATABASE_URL", "VIRTUAL_ENV", "PYTHONPATH"}
        }
        # The price map it ships with, not a download; no telemetry.
        env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
        cmd = [
            str(venv / "bin" / "litellm"), "--config", str(config_path),
            "--host", "127.0.0.1", "--port", str(self.port),
            "--num_workers", str(self.workers),
        ]  # fmt: skip
        self._log = open(self.workdir / "litellm.log", "wb")  # noqa: SIM115  (closed in __exit__)
        self._proc = subprocess.Popen(
            cmd, cwd=self.workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                tail = (self.workdir / "litellm.log").read_text()[-3000:]
                raise RuntimeError(f"the LiteLLM proxy exited:\n{tail}")
            return requests.get(f"{self.url}/health/liveliness", timeout=2).ok

        try:
            wait_for(ready, 180, "the LiteLLM proxy")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in reversed(descendants(self._proc.pid)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def pids(self) -> list[int]:
        assert self._proc is not None
        return descendants(self._proc.pid)

    def headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json", "Authorization": f"Bearer {MASTER_KEY}"}

    def warm_up(self) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            resp = requests.post(
                f"{self.url}/v1/chat/completions", json=body, headers=self.headers(), timeout=30
            )
            if resp.ok:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the LiteLLM proxy answered {resp.status_code}: {resp.text[:500]}")
