"""What every benchmark shares: statistics, the result record, the run settings and table printing.

Every figure a benchmark reports is the median of several repetitions with its spread (min..max), and
every headline is a ratio or a comparison measured in the same run, so a noisy machine shows up as a
wide spread instead of a wrong number.  Nothing here starts processes; it is pure and unit-tested.
"""

from __future__ import annotations

import itertools
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# ---- statistics ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks; NaN if empty."""
    if not values:
        return math.nan
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


@dataclass(frozen=True)
class Spread:
    """Median of the repetitions and their range."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        vals = [v for v in values if not math.isnan(v)]
        if not vals:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(vals), min(vals), max(vals), len(vals))

    @property
    def rel(self) -> float:
        """Range as a share of the median (0.1 = the repetitions span 10% of the median)."""
        if self.n < 2 or not self.median:
            return 0.0
        return (self.hi - self.lo) / abs(self.median)

    def fmt(self, unit: Callable[[float], str]) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return unit(self.median)
        return f"{unit(self.median)} [{unit(self.lo)}..{unit(self.hi)}]"

    def to_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or either is NaN."""
    if b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def ratios(a: Sequence[float], b: Sequence[float]) -> Spread:
    """The spread of pairwise ratios a[i] / b[i] of repetitions run side by side."""
    return Spread.of([ratio(x, y) for x, y in zip(a, b, strict=True)])


def max_gap(times: Sequence[float]) -> float:
    """The longest interval between consecutive times (sorted); 0 for fewer than two."""
    xs = sorted(times)
    return max((b - a for a, b in itertools.pairwise(xs)), default=0.0)


# ---- units --------------------------------------------------------------------------------------


def fmt_num(x: float, digits: int = 0) -> str:
    if math.isnan(x):
        return "n/a"
    return f"{x:,.{digits}f}"


def fmt_rate(x: float) -> str:
    return fmt_num(x, 0 if abs(x) >= 100 or math.isnan(x) else 1)


def fmt_us(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1e6:,.0f} us"


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    ms = seconds * 1e3
    return f"{ms:,.1f} ms" if ms < 100 else f"{ms:,.0f} ms"


def fmt_x(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}x"


def fmt_pct(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.1f}%"


def fmt_mb(nbytes: float) -> str:
    return "n/a" if math.isnan(nbytes) else f"{nbytes / 2**20:,.0f} MB"


def fmt_s(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One target from the issue: `what` is measured as `value` against `limit` (`<=` or `>=`)."""

    what: str
    value: float
    op: str
    limit: float
    shown: str = ""  # how the value reads in the report, e.g. "94 us"

    @property
    def met(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def line(self) -> str:
        mark = "met" if self.met else "MISSED"
        return f"target {self.what} {self.op} {self.limit:g}: {self.shown or fmt_num(self.value, 2)} -> {mark}"


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            for i, cell in enumerate(row):
                widths[i] = max(widths[i], len(cell))

        def line(cells: Sequence[str]) -> str:
            first = f"{cells[0]:<{widths[0]}}"
            rest = [f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True)]
            return "  ".join([first, *rest]).rstrip()

        sep = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), sep, *(line(r) for r in self.rows)])

    def to_json(self) -> dict[str, Any]:
        return {"headers": self.headers, "rows": self.rows}


@dataclass
class Result:
    """What one benchmark hands back: tables, targets, the headline, and raw numbers for --json."""

    name: str
    headline: str = ""
    tables: list[tuple[str, Table]] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    error: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    load: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average before and after

    def render(self) -> str:
        out: list[str] = []
        for title, table in self.tables:
            if title:
                out.append(title)
            out.append(table.render())
            out.append("")
        out.extend(self.notes)
        out.extend(t.line() for t in self.targets)
        if self.skipped:
            out.append(f"skipped: {self.skipped}")
        if self.error:
            out.append(f"error: {self.error}")
        if not math.isnan(self.load[0]):
            out.append(f"took {self.seconds:.1f} s; machine load (1-min average, {os.cpu_count()} CPUs): "
                       f"{self.load[0]:.2f} before, {self.load[1]:.2f} after")
        out.append(f"headline: {self.headline or self.skipped or self.error or 'n/a'}")
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "headline": self.headline,
            "tables": {title or str(i): t.to_json() for i, (title, t) in enumerate(self.tables)},
            "targets": [{"what": t.what, "value": t.value, "op": t.op, "limit": t.limit, "met": t.met}
                        for t in self.targets],
            "notes": self.notes,
            "skipped": self.skipped,
            "error": self.error,
            "seconds": round(self.seconds, 1),
            "load": list(self.load),
            "data": self.data,
        }


@dataclass(frozen=True)
class Settings:
    """How hard to run: `quick` is the CI smoke run (all benchmarks in under 3 minutes)."""

    quick: bool = False
    reps: int | None = None  # override the repetitions of every benchmark
    workdir: str = "/tmp"

    def n(self, full: int, quick: int) -> int:
        """Repetitions: the override, else `quick` or `full`."""
        if self.reps is not None:
            return self.reps
        return quick if self.quick else full

    def secs(self, full: float, quick: float) -> float:
        return quick if self.quick else full


# ---- machine ------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    first = out.stdout.splitlines()[0] if out.stdout else ""
    return first.split(" Copyright")[0].replace("ffmpeg version ", "") or "unknown"


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, load, Python, PyAV and the FFmpeg libraries it bundles, Debian's ffmpeg."""
    import av
    import numpy as np
    import zmq

    libav = av.library_versions.get("libavcodec", ())
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "pyav": av.__version__,
        "pyav_libavcodec": ".".join(map(str, libav)),
        "ffmpeg_cli": _ffmpeg_version(),
        "numpy": np.__version__,
        "pyzmq": zmq.__version__,
        "libzmq": zmq.zmq_version(),
        "kernel": platform.release(),
    }
