"""The `beauty` benchmark's own logic: its graphs, its arithmetic and its report (the benchmark itself
runs as `python -m tools.bench beauty`; it needs mediapipe and a local nginx-rtmp)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from mediaengine.topology.loader import load_topology

from tools.bench import beauty
from tools.bench.__main__ import BENCHMARKS


def test_the_benchmark_is_registered_with_a_case_per_effect() -> None:
    assert "beauty" in BENCHMARKS
    from mediaengine.actors.beauty.pipeline import EFFECTS

    assert beauty.EFFECT_NAMES == EFFECTS  # a new effect gets its own row
    assert beauty.CASES[0] == beauty.COPY and beauty.CASES[-1] == beauty.EVERYTHING
    assert all(beauty.effect_case(e) in beauty.CASES for e in EFFECTS)


@pytest.mark.parametrize("with_beauty", [True, False])
def test_both_graphs_load_and_differ_only_by_the_beauty_node(with_beauty: bool) -> None:
    topo = beauty.topology("rtmp://127.0.0.1:1935/live/x", "/tmp/clip.mp4", with_beauty)
    loaded = load_topology(topo)
    ids = {n.id for n in loaded.nodes}
    assert ids == ({"src", "beauty", "venc", "push"} if with_beauty else {"src", "venc", "push"})
    src = next(n for n in loaded.nodes if n.id == "src")
    assert (src.options.url, src.options.width, src.options.height, src.options.fps) == ("/tmp/clip.mp4", 1280, 720,
                                                                                            30.0)
    venc = next(n for n in topo["nodes"] if n["id"] == "venc")
    assert venc["inputs"]["in"] == ("beauty" if with_beauty else "src/video")
    push = next(n for n in topo["nodes"] if n["id"] == "push")
    assert push["options"]["url"] == "rtmp://127.0.0.1:1935/live/x"


def test_cores_pingpong_and_thread_split() -> None:
    assert beauty.cores(1.5, 2.0) == 0.75
    assert math.isnan(beauty.cores(1.0, 0.0))
    assert beauty.pingpong([1, 2, 3]) == [1, 2, 3, 3, 2, 1]
    before = {(1, "python"): 1.0, (2, "mediapipe/2"): 0.5}
    after = {(1, "python"): 1.5, (2, "mediapipe/2"): 0.75, (3, "python"): 0.25}  # thread 3 is new
    assert beauty.split_by_thread(before, after, main_tid=1) == {"main": 0.5, "mediapipe": 0.25, "other": 0.25}


def test_steps_alternate_and_every_frame_of_every_repetition_is_timed() -> None:
    calls: list[tuple[str, int]] = []
    steps = {name: (lambda k, name=name: calls.append((name, k))) for name in ("a", "b")}
    out = beauty.time_steps(steps, n=3, reps=2, warm=1)
    assert [len(out[n].wall) for n in "ab"] == [6, 6]
    timed = calls[2:]  # after one warm-up call each
    assert timed == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2)] * 2


def _fake_data() -> dict[str, object]:
    def case(ms: float) -> dict[str, object]:
        return {"wall_ms": [ms, ms * 1.1], "cpu_ms": [ms, ms], "p95_ms": ms * 1.5, "cpu_over_wall": 1.0}

    faces = {"cases": {name: case(0.25 if name == beauty.COPY else 4.0) for name in beauty.CASES},
             "face_found": 40, "landmarks_moved": 39, "frames": 40}
    by = {"main": 0.04, "mediapipe": 0.12, "other": 0.0}
    return {"moving": faces, "still": faces, "reps": 2, "size": [1280, 720], "cpu": 1, "pinned_tasks": 3,
            "frames": 40, "unpinned": {"threads_before": 3, "threads_after_facemesh": 5, "cpu_s": 0.16,
                                       "wall_s": 0.16, "median_ms": 4.0, "affinity": [0, 1], "by_thread_s": by,
                                       "paced": {"cpu_s": 0.4, "wall_s": 1.33, "busy_s": 0.4, "frames": 40,
                                                 "by_thread_s": by}}}


def test_the_report_has_a_row_per_case_against_the_copy() -> None:
    tables = beauty.frame_tables(_fake_data())  # type: ignore[arg-type]
    assert [t.split()[0] for t, _ in tables] == ["moving", "still"]
    rows = tables[0][1].rows
    assert [r[0] for r in rows] == list(beauty.CASES)
    assert rows[1][1] == "4.20 [4.00..4.40]" and rows[1][3] == "16.00x [16.00x..16.00x]"
    assert rows[1][4] == "4.00 [4.00..4.00]"  # CPU ms per frame
    notes = beauty.threads_notes(_fake_data())  # type: ignore[arg-type]
    assert "1.00 cores" in notes[0] and "3.00 ms in MediaPipe's threads" in notes[0]
    assert "0.301 cores" in notes[1]


def test_push_table_reads_cores_per_node() -> None:
    run = {"cpu_s": 10.0, "wall_s": 20.0, "fps": 30.0, "other_cpu_s": 1.0,
           "per_node_cpu_s": {"src": 2.0, "venc": 6.0, "push": 1.0}}
    with_b = {**run, "cpu_s": 16.0, "per_node_cpu_s": {**run["per_node_cpu_s"], "beauty": 6.0}}  # type: ignore[dict-item]
    t = beauty.push_table([run], [with_b])
    assert t.rows[0][1:4] == ["30.0", "0.500", "-"]
    assert t.rows[1][2:4] == ["0.800", "0.300"]
    assert np.isclose(float(t.rows[1][-1]), 0.05)
