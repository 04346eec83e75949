"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) as text.

    python -m bench.profile_summary /tmp/prof/worker-*.collapsed [--top 40] [--under NAME]

Prints the functions with the most samples: inclusive (the function or
anything it called was running) and self (the function itself was on top).
``--under NAME`` keeps only stacks that pass through a frame containing NAME
(``handle_call``, say) and shows their share of all samples.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def read_stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        frames_text, _, count = line.rpartition(" ")
        if not frames_text or not count.isdigit():
            continue
        stacks.append((frames_text.split(";"), int(count)))
    return stacks


def summarise(stacks: list[tuple[list[str], int]], top: int, under: str | None) -> str:
    total = sum(count for _, count in stacks)
    if under:
        stacks = [(f, c) for f, c in stacks if any(under in frame for frame in f)]
    kept = sum(count for _, count in stacks)
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for frames, count in stacks:
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{kept} of {total} samples" + (f" pass through {under!r}" if under else "")]
    lines.append("\ninclusive:")
    for frame, count in inclusive.most_common(top):
        lines.append(f"  {100 * count / max(kept, 1):5.1f}%  {frame}")
    lines.append("\nself:")
    for frame, count in own.most_common(top):
        lines.append(f"  {100 * count / max(kept, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", type=Path, nargs="+", help="one file per worker")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--under", help="keep only stacks through a frame containing this")
    args = parser.parse_args(argv)
    stacks = [stack for path in args.paths for stack in read_stacks(path)]
    print(summarise(stacks, args.top, args.under))


if __name__ == "__main__":
    main()
