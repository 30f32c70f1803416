"""The `screen_capture` benchmark's own arithmetic and graph (the benchmark itself runs under Xvfb:
`python -m tools.bench screen_capture`)."""

from __future__ import annotations

import math

from mediaengine.topology.loader import load_topology

from tools.bench import screen_capture
from tools.bench.__main__ import BENCHMARKS


def test_cpu_per_frame_is_milliseconds_per_emitted_frame() -> None:
    assert screen_capture.per_frame(0.12, 30) == 4.0
    assert math.isnan(screen_capture.per_frame(1.0, 0))


def test_the_benchmark_is_registered_and_its_graph_loads() -> None:
    assert "screen_capture" in BENCHMARKS
    topo = load_topology(screen_capture.topology(":99"))
    scr = next(n for n in topo.nodes if n.id == "scr")
    assert (scr.options.width, scr.options.height, scr.options.fps) == (1280, 720, 30.0)
