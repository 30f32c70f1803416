"""`python -m tools.bench [NAME ...] [--quick] [--json out.json]`: run the benchmark suite.

`python -m tools.bench report out.json -o BENCHMARKS.md` fills BENCHMARKS.md's generated blocks from
such a JSON file (`report.py`).

Each benchmark prints its tables, its targets (met / MISSED) and, last, one `headline:` line.  A
summary follows: targets met and missed, benchmarks skipped
and benchmarks that failed.  The exit status is 1 only when a benchmark failed (raised); missed
targets and skips are results, not failures.  `--quick` is the CI smoke run: every benchmark, fewer
repetitions and shorter durations, under 3 minutes in all.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from ._common import Result, Settings, machine_info

BENCHMARKS = ("ring", "chain", "push_cpu", "latency", "restart", "footprint", "screen_capture", "capture_encode",
              "effects", "compositor", "preview", "audio", "abr", "beauty")


def _on_term(signum: int, frame: FrameType | None) -> None:
    # turn SIGTERM into an exception so every benchmark's `finally` cleans up
    raise KeyboardInterrupt(f"signal {signum}")


def run_one(name: str, settings: Settings) -> Result:
    module = importlib.import_module(f"tools.bench.{name}")
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    try:
        result: Result = module.run(settings)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # one broken benchmark must not hide the others: it is reported and counted
        result = Result(name, error=f"{type(exc).__name__}: {exc}")
        result.notes.append("".join(traceback.format_exception(exc)).rstrip())
    result.seconds = time.monotonic() - t0
    result.load = (load0, os.getloadavg()[0])
    return result


def summary(results: Sequence[Result]) -> tuple[str, int]:
    met = sum(t.met for r in results for t in r.targets)
    missed = [f"{r.name}: {t.what}" for r in results for t in r.targets if not t.met]
    skipped = [r.name for r in results if r.skipped]
    failed = [r.name for r in results if r.error]
    lines = [f"summary: {len(results)} benchmarks, {met} targets met, {len(missed)} missed, "
             f"{len(skipped)} skipped, {len(failed)} failed"]
    lines += [f"  missed  {m}" for m in missed]
    lines += [f"  skipped {r.name}: {r.skipped}" for r in results if r.skipped]
    lines += [f"  failed  {r.name}: {r.error.splitlines()[0]}" for r in results if r.error]
    return "\n".join(lines), (1 if failed else 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    p.add_argument("--quick", action="store_true", help="fewer repetitions, shorter runs (CI smoke run)")
    p.add_argument("--reps", type=int, default=None, help="repetitions for every benchmark (overrides the default)")
    p.add_argument("--json", metavar="FILE", default=None, help="also write every figure to FILE as JSON")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["report"]:  # python -m tools.bench report RUN.json -o BENCHMARKS.md
        from .report import main as report_main

        return report_main(argv[1:])
    args = build_parser().parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    names = args.names or list(BENCHMARKS)
    signal.signal(signal.SIGTERM, _on_term)
    info = machine_info()
    mode = "quick" if args.quick else "full"
    print(f"mediaengine benchmarks ({mode}) {info['date']}: {info['nproc']} x {info['cpu']}, "
          f"load {info['loadavg']}, Python {info['python']}, PyAV {info['pyav']} "
          f"(libavcodec {info['pyav_libavcodec']}), ffmpeg CLI {info['ffmpeg_cli']}", flush=True)
    results: list[Result] = []
    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="mediaengine-bench-") as work:
            settings = Settings(quick=args.quick, reps=args.reps, workdir=work)
            for name in names:
                print(f"\n=== {name} ===", flush=True)
                result = run_one(name, settings)
                results.append(result)
                print(result.render(), flush=True)
    except KeyboardInterrupt as exc:  # the benchmark's own `finally` blocks have cleaned up by now
        print(f"\ninterrupted ({exc or 'Ctrl-C'}); everything it started was cleaned up", file=sys.stderr)
        return 130
    text, status = summary(results)
    print(f"\n{text}\ntotal {time.monotonic() - t0:.1f} s", flush=True)
    if args.json:
        doc: dict[str, Any] = {"mode": mode, "machine": info, "results": [r.to_json() for r in results]}
        Path(args.json).write_text(json.dumps(doc, indent=1, default=str))
        print(f"wrote {args.json}")
    return status


if __name__ == "__main__":
    sys.exit(main())
