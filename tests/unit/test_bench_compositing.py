"""The compositor and preview benchmarks' pure parts: the preview run's graph and the compositor's
measurement on tiny frames (the full runs are `python -m tools.bench compositor preview`)."""

from __future__ import annotations

from mediaengine.topology.loader import load_topology

from tools.bench import effects_compositor, preview


def test_preview_bench_adds_a_preview_beside_the_encoder_only_in_its_second_run() -> None:
    plain = preview.topology("rtmp://127.0.0.1:1/live/x", with_preview=False)
    viewed = preview.topology("rtmp://127.0.0.1:1/live/x", with_preview=True)
    assert [n["id"] for n in viewed["nodes"]] == [n["id"] for n in plain["nodes"]] + [preview.PREVIEW]
    prev = viewed["nodes"][-1]
    assert prev["kind"] == "preview" and prev["inputs"] == {"in": "src"} and prev["options"]["mode"] == "http"
    load_topology(viewed)  # the graph loads: kinds, pads and options check out


def test_compositor_measure_times_every_frame_of_both_cases() -> None:
    got = effects_compositor.measure(64, 36, 3)
    assert len(got["compositor"]) == 3 and len(got["copy"]) == 3
    assert all(t >= 0 for t in got["compositor"] + got["copy"])
