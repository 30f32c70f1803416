"""Compare two pytest runs' per-test durations: which tests got slower, and by how much.

    python -m pytest --durations=0 ... > before.log     (at the old commit)
    python -m pytest --durations=0 ... > after.log      (at the new one, on the same machine, same load)
    python -m tools.test_durations before.log after.log [--limit 1.2] [--min-s 1.0]

Each test's time is its setup + call + teardown as pytest printed them.  Several logs can be given per side
(`before.log,before2.log`): a test's time is then its median over them, which damps the noise of a shared
2-core machine.  Exit status 1 if a test present in both is slower than `limit` times its old time (and
the difference is at least `min-s` seconds: start-up jitter of sub-second tests is not a regression).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"\s*([0-9.]+)s (call|setup|teardown)\s+(\S+)")


def durations(path: Path) -> dict[str, float]:
    """Test id -> seconds (setup + call + teardown) from one `pytest --durations=0` log."""
    out: dict[str, float] = defaultdict(float)
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(3)] += float(m.group(1))
    return dict(out)


def median_durations(paths: list[Path]) -> dict[str, float]:
    """Test id -> median seconds over the logs that have it."""
    runs: dict[str, list[float]] = defaultdict(list)
    for path in paths:
        for test, seconds in durations(path).items():
            runs[test].append(seconds)
    return {test: statistics.median(times) for test, times in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", help="pytest --durations=0 log(s) of the old commit, comma-separated")
    ap.add_argument("after", help="the same for the new commit")
    ap.add_argument("--limit", type=float, default=1.2, help="slower than this ratio is a regression (1.2)")
    ap.add_argument("--min-s", type=float, default=1.0, help="ignore differences under this many seconds")
    args = ap.parse_args(argv)
    before = median_durations([Path(p) for p in args.before.split(",")])
    after = median_durations([Path(p) for p in args.after.split(",")])
    both = sorted(set(before) & set(after), key=lambda t: after[t] / max(before[t], 1e-3), reverse=True)
    slower = [t for t in both if after[t] > args.limit * before[t] and after[t] - before[t] >= args.min_s]
    for test in both:
        ratio = after[test] / max(before[test], 1e-3)
        flag = "  SLOWER" if test in slower else ""
        print(f"{before[test]:7.2f}s -> {after[test]:7.2f}s  x{ratio:4.2f}{flag}  {test}")
    print(f"{len(both)} tests in both runs: {sum(before[t] for t in both):.1f}s -> {sum(after[t] for t in both):.1f}s; "
          f"{len(slower)} slower than x{args.limit:g}")
    return 1 if slower else 0


if __name__ == "__main__":
    sys.exit(main())
