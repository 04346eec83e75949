"""The benchmark (``python -m bench``) imports and reads its arguments; it never runs in CI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import load, report, run


def test_defaults_are_the_documented_run():
    args = run.parse_args([])
    assert args.seconds == 8.0
    assert args.workers == 2
    assert args.concurrency == [1, 16]
    assert args.only is None and not args.memory and args.disable == []
    assert not args.no_synchronous_commit


def test_memory_mode_and_options_are_read():
    args = run.parse_args(
        ["--memory", "--memory-calls", "50000", "--memory-every", "5000", "--only", "stream"]
    )
    assert args.memory and args.memory_calls == 50_000 and args.memory_every == 5_000
    assert args.only == "stream"


@pytest.mark.parametrize(
    "argv",
    [["--seconds", "0"], ["--memory-calls", "10", "--memory-every", "100"], ["--only", "x"]],
)
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.parse_args(argv)
    assert exit_info.value.code == 2


def test_the_wrk_script_carries_every_body_and_the_stop_count():
    bodies = [json.dumps({"model": "m", "user": f"u{i}"}) for i in range(3)]
    script = load.wrk_script("/v1/chat/completions", bodies, {"Authorization": "Bearer k"}, 500)
    for body in bodies:
        assert json.dumps(body) in script
    assert "local limit = 500" in script and "wrk.thread:stop()" in script
    assert "wrk.thread:stop()" not in load.wrk_script("/x", bodies, {}, 0)


def test_wrk_summary_line_is_parsed():
    line = (
        'BENCH_JSON {"requests": 2000, "duration_us": 4000000, "status_errors": 1, '
        '"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 2, '
        '"p50_us": 1500, "p90_us": 2500, "p99_us": 4000, "mean_us": 1600.5, "max_us": 9000}'
    )
    result = load.parse_summary("Running 4s test\n" + line + "\n")
    assert result.rps == 500.0
    assert result.errors == 3
    assert (result.p50_ms, result.p99_ms) == (1.5, 4.0)


def test_results_replace_only_their_own_section(tmp_path: Path):
    results = tmp_path / "RESULTS.md"
    results.write_text(f"# Notes\n\nkept\n\n{report.BEGIN}\nold run\n{report.END}\n\ntail kept\n")
    report.write_results(results, "new run\n")
    text = results.read_text()
    assert "old run" not in text and "new run" in text
    assert text.startswith("# Notes\n\nkept") and text.rstrip().endswith("tail kept")


def test_instruction_counts_split_the_request_thread_from_the_others(tmp_path: Path):
    from bench import instructions

    # What callgrind --separate-threads writes: one file per thread, "-01" the main one.
    for name, total in [("few.77-01", 4_000), ("few.77-02", 300), ("few.77-03", 200)]:
        (tmp_path / name).write_bytes(b"events: Ir\nsummary: %d\n\nfn=x\n" % total)
    (tmp_path / "few.77").write_bytes(b"# no counts in the process file\n")
    (tmp_path / "many.78-01").write_bytes(b"summary: 9000\n")
    assert instructions._counts(tmp_path, "few") == (4_000, 500)
    assert instructions._counts(tmp_path, "many") == (9_000, 0)
