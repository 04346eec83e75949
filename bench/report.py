"""The benchmark's results as Markdown, and their place in ``bench/RESULTS.md``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Phase, Run

BEGIN = "<!-- bench:run:begin -->"
END = "<!-- bench:run:end -->"

# The targets (2-core machine, all plugins on, PostgreSQL).
ADDED_P50_MS = 1.5
ADDED_P99_MS = 5.0
CHAT_RPS_C16 = 1000.0
STREAM_RPS_C16 = 400.0
CPU_MS_PER_CALL = 1.0
ROUND_TRIPS_PER_CALL = 2.0
# Issue 20's targets (the same machine and load): CPU per chat call at c=1,
# req/s at c=16, round trips with every plugin on; streaming no worse than chat.
CPU_MS_PER_CALL_20 = 1.4
CHAT_RPS_C16_20 = 700.0
ROUND_TRIPS_PER_CALL_20 = 3.0


def _pairs(run: Run) -> list[tuple[Phase | None, Phase]]:
    direct = {(p.stream, p.connections): p for p in run.phases if p.target == "direct"}
    return [(direct.get((p.stream, p.connections)), p) for p in run.phases if p.target == "proxy"]


def _find(run: Run, stream: bool, connections: int) -> tuple[Phase | None, Phase | None]:
    for direct, proxy in _pairs(run):
        if proxy.stream == stream and proxy.connections == connections:
            return direct, proxy
    return None, None


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _phase_table(run: Run) -> list[str]:
    lines = [
        "| phase | direct req/s | direct p50 / p99 ms | proxy req/s | proxy p50 / p99 ms "
        "| added p50 / p99 ms | proxy CPU ms/call | Postgres CPU ms/call "
        "| DB round trips/call (call path + webhook sender) | webhooks/call "
        "| worker CPU split | failed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for direct, proxy in _pairs(run):
        d = direct.load if direct else None
        p = proxy.load
        added = f"{_ms(p.p50_ms - d.p50_ms)} / {_ms(p.p99_ms - d.p99_ms)}" if d is not None else "-"
        lines.append(
            f"| {proxy.name} "
            f"| {f'{d.rps:.0f}' if d else '-'} "
            f"| {f'{_ms(d.p50_ms)} / {_ms(d.p99_ms)}' if d else '-'} "
            f"| {p.rps:.0f} | {_ms(p.p50_ms)} / {_ms(p.p99_ms)} | {added} "
            f"| {_ms(proxy.proxy_cpu_ms)} | {_ms(proxy.postgres_cpu_ms)} "
            f"| {proxy.request_statements:.2f} + {proxy.background_statements:.2f} "
            f"| {proxy.webhooks:.2f} "
            f"| {' / '.join(f'{share:.0%}' for share in proxy.worker_cpu_share)} "
            f"| {p.errors + (d.errors if d else 0)} |"
        )
    return lines


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def _throughput(run: Run, stream: bool, target: float, what: str, label: str = "") -> list[str]:
    """The row of a req/s target at 16 connections; none if that phase did not run."""
    _, proxy = _find(run, stream, 16)
    if proxy is None:
        return []
    rps = proxy.load.rps
    return [f"| {label}>= {target:.0f} req/s{what} | {rps:.0f} req/s | {_verdict(rps >= target)} |"]


def _targets(run: Run) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    direct, proxy = _find(run, False, 1)
    if direct is not None and proxy is not None:
        p50 = proxy.load.p50_ms - direct.load.p50_ms
        p99 = proxy.load.p99_ms - direct.load.p99_ms
        lines.append(
            f"| added latency p50 <= {ADDED_P50_MS} ms, p99 <= {ADDED_P99_MS} ms (chat c=1) "
            f"| {_ms(p50)} / {_ms(p99)} ms "
            f"| {_verdict(p50 <= ADDED_P50_MS and p99 <= ADDED_P99_MS)} |"
        )
    lines += _throughput(run, False, CHAT_RPS_C16, f", {run.workers} workers, chat c=16")
    lines += _throughput(run, True, STREAM_RPS_C16, " streaming, c=16")
    chat = [p for _, p in _pairs(run) if not p.stream]
    if chat:
        worst = max(p.proxy_cpu_ms for p in chat)
        lines.append(
            f"| proxy CPU <= {CPU_MS_PER_CALL} ms per call (chat, worst phase) | {_ms(worst)} ms "
            f"| {_verdict(worst <= CPU_MS_PER_CALL)} |"
        )
        lines.append(_round_trips(chat, ROUND_TRIPS_PER_CALL, ""))
    return lines + _targets_20(run)


def _round_trips(chat: list[Phase], most: float, label: str) -> str:
    """The round-trip target's row: the worst chat phase's statements per call."""
    trips = max(p.request_statements for p in chat)
    return (
        f"| {label}<= {most:.0f} database round trips per metered call (call path) "
        f"| {trips:.2f} | {_verdict(trips <= most + 0.05)} |"
    )


def _targets_20(run: Run) -> list[str]:
    """Issue 20's rows (added p50 is the same target as above)."""
    lines = []
    _, chat1 = _find(run, False, 1)
    if chat1 is not None:
        cpu = chat1.proxy_cpu_ms
        lines.append(
            f"| issue 20: proxy CPU <= {CPU_MS_PER_CALL_20} ms per call (chat c=1) "
            f"| {_ms(cpu)} ms | {_verdict(cpu <= CPU_MS_PER_CALL_20)} |"
        )
    lines += _throughput(
        run, False, CHAT_RPS_C16_20, f", {run.workers} workers, chat c=16", "issue 20: "
    )
    chat = [p for _, p in _pairs(run) if not p.stream]
    if chat:
        lines.append(_round_trips(chat, ROUND_TRIPS_PER_CALL_20, "issue 20: "))
    for connections in (1, 16):
        _, chat_phase = _find(run, False, connections)
        _, stream_phase = _find(run, True, connections)
        if chat_phase is None or stream_phase is None:
            continue
        ours, theirs = stream_phase.proxy_cpu_ms, chat_phase.proxy_cpu_ms
        lines.append(
            f"| issue 20: streaming CPU per call no worse than chat (c={connections}) "
            f"| {_ms(ours)} vs {_ms(theirs)} ms | {_verdict(ours <= theirs)} |"
        )
    return lines


def _peer(run: Run) -> list[str]:
    """The peer's phases beside Comptroller's, and the ratios (peer / Comptroller)."""
    peers = [p for p in run.phases if p.target == "peer"]
    if not peers:
        return []
    lines = [
        f"Peer: {run.peer}, same upstream and loads, 2 workers, no database (so no spend "
        "tracking, budgets or limits), after Comptroller's phases. Ratios are peer / Comptroller.",
        "",
        "| phase | peer req/s | peer p50 / p99 ms | peer added p50 ms | peer CPU ms/call "
        "| CPU per call ratio | req/s ratio | added p50 ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for peer in peers:
        direct, proxy = _find(run, peer.stream, peer.connections)
        p = peer.load
        added = p.p50_ms - direct.load.p50_ms if direct is not None else None
        ours = proxy.load.p50_ms - direct.load.p50_ms if proxy and direct else None
        cpu_ratio = peer.proxy_cpu_ms / proxy.proxy_cpu_ms if proxy and proxy.proxy_cpu_ms else None
        rps_ratio = p.rps / proxy.load.rps if proxy and proxy.load.rps else None
        lat_ratio = added / ours if added is not None and ours else None
        lines.append(
            f"| {peer.name} | {p.rps:.0f} | {_ms(p.p50_ms)} / {_ms(p.p99_ms)} "
            f"| {_ms(added) if added is not None else '-'} | {_ms(peer.proxy_cpu_ms)} "
            f"| {_ratio(cpu_ratio)} | {_ratio(rps_ratio)} | {_ratio(lat_ratio)} |"
        )
    return lines


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _memory(run: Run) -> list[str]:
    if not run.rss_samples:
        return []
    lines = ["| calls through the proxy | worker RSS (MiB) |", "|---:|---|"]
    for calls, sample in run.rss_samples:
        lines.append(f"| {calls} | {', '.join(f'{mib:.1f}' for mib in sample)} |")
    return lines


def render(run: Run) -> str:
    lines = [
        f"### Run of {run.started}",
        "",
        f"Command: `{run.command}` ({run.workers} gunicorn workers x {run.threads} threads, "
        f"{run.seconds:g} s per phase, {run.total_seconds:.0f} s in all; plugins "
        f"{'all on' if not run.disabled else 'off: ' + ', '.join(run.disabled)}"
        f"{'' if run.synchronous_commit else '; synchronous_commit=off'}).",
        "",
    ]
    if run.phases:
        lines += _phase_table(run) + ["", *_targets(run), ""]
        peer = _peer(run)
        if peer:
            lines += [*peer, ""]
    lines += _memory(run) + [""]
    if "webhook_alerter" in run.disabled:
        lines.append("Webhook alerts: none (the webhook alerter is off).")
    else:
        drain = (
            f"{run.outbox_drain_seconds:.1f} s after the load"
            if run.outbox_drain_seconds is not None
            else "NOT within 120 s"
        )
        lines.append(
            f"Webhook alerts: {run.alerts_queued} queued, {run.alerts_delivered} delivered "
            f"(outbox empty {drain})."
        )
    exact = abs(run.spend_counter - run.spend_logged) <= 1e-9 * max(1.0, run.spend_logged)
    lines.append(
        f"Spend: proxy counter {run.spend_counter!r}, sum of {run.spend_rows} spend logs "
        f"{run.spend_logged!r} ({'equal' if exact else 'DIFFERENT'})."
    )
    if run.profile:
        lines.append(f"Profile (py-spy, collapsed stacks of one worker): `{run.profile}`.")
    return "\n".join(lines) + "\n"


def write_results(path: Path, section: str) -> None:
    """Put ``section`` between the markers of ``path``, keeping the rest of it."""
    block = f"{BEGIN}\n{section}{END}\n"
    text = path.read_text() if path.exists() else ""
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail.lstrip("\n")
    else:
        text = (text or "# Benchmark results\n\n") + "\n## Latest run\n\n" + block
    path.write_text(text)
