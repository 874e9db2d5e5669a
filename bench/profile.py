"""Summarise a py-spy recording (`--format raw`, collapsed stacks): where the service spends its CPU.

    python -m bench.profile PROFILE.txt [--top 25] [--match app/]

Self time: samples whose innermost frame is the function. Total time: samples with the function anywhere
on the stack (counted once per sample). Line numbers are dropped so a function is one row.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r":\d+\)$")
_VENV = re.compile(r"^.*?/site-packages/")
_STDLIB = re.compile(r"^.*?/lib/python3\.\d+/")


@dataclass
class Profile:
    samples: int
    self_counts: Counter[str]
    total_counts: Counter[str]


def _frame(raw: str) -> str:
    """'handle (/venv/lib/python3.11/site-packages/x/y.py:12)' -> 'handle (x/y.py)'."""
    frame = _LINE.sub(")", raw.strip())
    name, _, path = frame.partition(" (")
    path = _STDLIB.sub("", _VENV.sub("", path))
    path = path.replace(str(Path(__file__).resolve().parent.parent) + "/", "")
    return f"{name} ({path}" if path else name


def load(path: Path) -> Profile:
    """Read collapsed stacks: 'frame;frame;...;frame COUNT' per line (process/thread pseudo-frames first)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            total_counts[frame] += n
    return Profile(samples, self_counts, total_counts)


def summary(profile: Profile, *, top: int = 20, match: str | None = None) -> str:
    """Two tables, self and total, as percentages of all samples."""
    if not profile.samples:
        return "no samples"
    lines = [f"{profile.samples} samples"]
    for title, counts in (("self", profile.self_counts), ("total", profile.total_counts)):
        lines.append(f"-- top by {title} time" + (f" (frames matching {match!r})" if match else ""))
        rows = [(frame, n) for frame, n in counts.most_common() if match is None or match in frame][:top]
        lines += [f"{100 * n / profile.samples:6.1f}%  {frame}" for frame, n in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("path", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", help="only frames containing this text, e.g. app/")
    args = parser.parse_args(argv)
    sys.stdout.write(summary(load(args.path), top=args.top, match=args.match) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
