"""The benchmark suite's pure helpers: statistics, targets, reports, and how results are derived.

The benchmarks themselves run as `python -m tools.bench --quick` (CI's `make bench`); these tests pin
the arithmetic they report with, so a wrong median or a target that cannot fail shows up here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tools.bench import _beep, report
from tools.bench import _common as c
from tools.bench.__main__ import summary
from tools.bench._feeder import PushSpec, ffmpeg_command
from tools.bench._push import push_spec, set_sender_url
from tools.bench.latency import in_window, latencies, summarise
from tools.bench.restart import gaps


def test_percentile_interpolates_between_ranks() -> None:
    assert c.percentile([1, 2, 3, 4], 50) == 2.5
    assert c.percentile([5, 1, 3], 0) == 1
    assert c.percentile([5, 1, 3], 100) == 5
    assert c.percentile([10, 20], 95) == pytest.approx(19.5)
    assert math.isnan(c.percentile([], 50))
    with pytest.raises(ValueError):
        c.percentile([1], 101)


def test_spread_is_median_and_range_and_ignores_nan() -> None:
    s = c.Spread.of([3.0, 1.0, math.nan, 2.0])
    assert (s.median, s.lo, s.hi, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.rel == pytest.approx(1.0)
    assert s.fmt(lambda x: f"{x:g}") == "2 [1..3]"
    assert c.Spread.of([4.0]).fmt(lambda x: f"{x:g}") == "4"
    assert c.Spread.of([]).fmt(str) == "n/a"


def test_ratios_pair_repetitions() -> None:
    r = c.ratios([10.0, 20.0, 30.0], [5.0, 5.0, 0.0])
    assert (r.median, r.lo, r.hi, r.n) == (3.0, 2.0, 4.0, 2)  # the zero denominator is left out
    with pytest.raises(ValueError):
        c.ratios([1.0], [1.0, 2.0])


def test_max_gap_sorts_first() -> None:
    assert c.max_gap([0.3, 0.0, 0.1]) == pytest.approx(0.2)
    assert c.max_gap([1.0]) == 0.0


@pytest.mark.parametrize(("value", "op", "limit", "met"), [
    (90.0, "<=", 100.0, True), (100.0, "<=", 100.0, True), (101.0, "<=", 100.0, False),
    (1600.0, ">=", 1500.0, True), (1400.0, ">=", 1500.0, False), (math.nan, "<=", 1.0, False),
])
def test_target_met_or_missed(value: float, op: str, limit: float, met: bool) -> None:
    t = c.Target("x", value, op, limit, "shown")
    assert t.met is met
    assert t.line().endswith("met" if met else "MISSED")


def test_result_prints_the_headline_last() -> None:
    table = c.Table(["name", "value"])
    table.add("a", 1)
    table.add("longer", 22)
    res = c.Result("demo", headline="a is 2x b", tables=[("title", table)],
                   targets=[c.Target("v", 1.0, "<=", 2.0, "1")], load=(0.5, 0.7))
    lines = res.render().splitlines()
    assert lines[-1] == "headline: a is 2x b"
    assert lines[0] == "title"
    assert lines[1].startswith("name") and lines[3].endswith(" 1") and lines[4].endswith("22")
    assert any("0.50 before, 0.70 after" in ln for ln in lines)
    assert res.to_json()["targets"][0]["met"] is True


def test_summary_counts_and_fails_only_on_errors() -> None:
    ok = c.Result("a", targets=[c.Target("t1", 1, "<=", 2), c.Target("t2", 3, "<=", 2)])
    skipped = c.Result("b", skipped="rtmp_sender not available")
    text, status = summary([ok, skipped])
    assert status == 0
    assert text.splitlines()[0] == "summary: 2 benchmarks, 1 targets met, 1 missed, 1 skipped, 0 failed"
    assert "skipped b: rtmp_sender not available" in text
    text, status = summary([ok, c.Result("c", error="boom\ntraceback")])
    assert status == 1 and "failed  c: boom" in text and "traceback" not in text


def test_settings_choose_quick_or_full_unless_overridden() -> None:
    assert c.Settings(quick=True).n(5, 2) == 2
    assert c.Settings().n(5, 2) == 5
    assert c.Settings(quick=True, reps=7).n(5, 2) == 7
    assert c.Settings(quick=True).secs(20, 5) == 5


def test_restart_gaps_separate_stalls_from_frozen_pictures() -> None:
    # counter, stamp ms, receive ms, receive monotonic s
    frames = [[1, 0, 0, 10.00], [2, 0, 0, 10.03], [2, 0, 0, 10.06], [2, 0, 0, 10.09], [5, 0, 0, 10.30],
              [6, 0, 0, 10.33], [7, 0, 0, 20.0]]
    arrival, frozen = gaps(frames, 10.0, 11.0)
    assert arrival == pytest.approx(0.21)  # 10.09 -> 10.30
    assert frozen == pytest.approx(0.27)  # counter 2 first seen at 10.03, next new counter at 10.30


def test_latency_counts_only_the_window_and_pictures_by_counter() -> None:
    # counter, stamp ms, receive wall ms, receive monotonic s: one before the window, one after its end
    frames = [[1, 1000, 1040.0, 5.0], [2, 1033, 1100.0, 6.0], [2, 1033, 1101.0, 6.1], [4, 1099, 1149.0, 7.0],
              [5, 1133, 1333.0, 8.0]]
    window = in_window(frames, since_mono=6.0, until_mono=8.0)
    assert latencies(window) == pytest.approx([0.067, 0.068, 0.050])
    s = summarise(window)
    assert s["p50_s"] == pytest.approx(0.067) and s["max_s"] == pytest.approx(0.068) and s["frames"] == 3
    assert (s["pictures"], s["rendered"]) == (2, 3)  # counters 2 and 4 seen, 2..4 rendered (3 missing)


def test_beep_onsets_give_audio_latency_and_av_offset() -> None:
    rate, wall0 = 48000, 1000.1  # sample 0 is due at wall 1000.1; beeps start at 1000.5, 1001.0, ...
    mask = _beep.beep_mask(0, rate * 2, rate, wall0)
    starts = [int(i) + 1 for i in np.flatnonzero(np.diff(mask.astype(np.int8)) == 1)]
    assert starts == [round(0.4 * rate), round(0.9 * rate), round(1.4 * rate), round(1.9 * rate)]
    finder = _beep.OnsetFinder(rate)
    pcm = _beep.gate(np.full((rate * 2, 1), 10000, np.int16), 0, rate, wall0)[:, 0] / 32768.0
    found = [i + j for i in range(0, len(pcm), 1024) for j in finder.feed(pcm[i:i + 1024])]
    assert found == starts
    # a beep due at 1000.5 decoded at 1000.56 with pts 2.05; video pts - stamp = 2.0 - 1000.0 (s)
    fig = _beep.av_figures([[2.05, 1000.56, 9.0]], [[1, 1000_000.0, 1000_030.0, 9.0, -998.0]])
    assert fig["audio_latency_s"] == pytest.approx([0.06])
    assert fig["av_offset_s"] == pytest.approx([(2.05 - 1000.5) - (-998.0 - 1000.0)])


def test_ffmpeg_mirrors_the_engine_encoder_settings() -> None:
    spec = PushSpec(width=1280, height=720, fps=30, v_bitrate_kbps=2500, gop_s=1.0, preset="veryfast",
                    tune="zerolatency", threads=1, vbv_buffer_s=1.0, a_bitrate_kbps=128, rate=48000, channels=2)
    cmd = ffmpeg_command(spec, "rtmp://127.0.0.1:1/live/x", audio_fd=7)
    text = " ".join(cmd)
    for part in ("-s 1280x720", "-framerate 30", "-c:v libx264", "-preset veryfast", "-tune zerolatency",
                 "-g 30", "-bf 0", "-threads 1", "-b:v 2500k", "-maxrate 2500k", "-bufsize 2500k",
                 "-sc_threshold 0", "-ar 48000 -ac 2 -i pipe:7", "-c:a aac -b:a 128k", "-f flv rtmp://"):
        assert part in text, part
    assert "-itsoffset" not in cmd
    shifted = ffmpeg_command(PushSpec(audio_offset_ms=40.0), "rtmp://127.0.0.1:1/live/x", audio_fd=7)
    i = shifted.index("-itsoffset")
    assert shifted[i + 1] == "0.04" and i < shifted.index("s16le") < shifted.index("pipe:7")  # on the audio input


def test_push_spec_reads_the_topology_and_fills_defaults() -> None:
    topo = {"nodes": [
        {"id": "src", "kind": "test_pattern", "options": {"width": 1280, "height": 720, "fps": 30}},
        {"id": "tone", "kind": "tone", "options": {"rate": 44100, "channels": 2}},
        {"id": "venc", "kind": "video_encoder", "options": {"bitrate_kbps": 2500, "gop_s": 1}},
        {"id": "aenc", "kind": "audio_encoder", "options": {}},
        {"id": "push", "kind": "rtmp_sender", "options": {"url": "${PUSH_URL}"}},
    ]}
    spec = push_spec(topo)
    assert (spec.width, spec.height, spec.fps, spec.rate, spec.channels) == (1280, 720, 30, 44100, 2)
    assert (spec.v_bitrate_kbps, spec.gop_s, spec.preset, spec.a_bitrate_kbps) == (2500, 1, "veryfast", 64)
    assert push_spec({"nodes": [*topo["nodes"][:4], {"id": "push", "kind": "rtmp_sender",
                                                      "options": {"audio_offset_ms": 25}}]}).audio_offset_ms == 25
    moved = set_sender_url(topo, "rtmp://127.0.0.1:9/live/k")
    assert moved["nodes"][4]["options"]["url"] == "rtmp://127.0.0.1:9/live/k"
    assert topo["nodes"][4]["options"]["url"] == "${PUSH_URL}"  # the original is left alone


def test_report_fills_only_the_generated_blocks_from_the_json() -> None:
    res = c.Result("ring", headline="ring is 2x", tables=[("frames", c.Table(["a", "b|c"], [["1", "2"]]))],
                   targets=[c.Target("copy in / Queue", 10.0, ">=", 25), c.Target("hop", 1.2, "<=", 1.5)],
                   load=(3.0, 4.0))
    doc = {"mode": "full", "results": [res.to_json()],
           "machine": {"date": "d", "nproc": 2, "cpu": "cpu", "loadavg": [3.0, 2.0, 1.0], "python": "3.11",
                       "pyav": "18", "pyav_libavcodec": "62", "ffmpeg_cli": "5.1"}}
    text = ("# B\nprose 1\n<!-- generated:ring -->\nold 999\n<!-- /generated:ring -->\nprose 2\n"
            "<!-- generated:targets -->\n<!-- /generated:targets -->\n"
            "<!-- generated:chain -->\nold\n<!-- /generated:chain -->\n"
            "<!-- generated:run -->\n<!-- /generated:run -->\n")
    out = report.fill(text, report.blocks(doc), "run.json")
    assert out.startswith("# B\nprose 1\n<!-- generated:ring -->\n") and "\nprose 2\n" in out
    assert "old 999" not in out and "| a | b\\|c |" in out and "headline: ring is 2x" in out
    assert "| ring | copy in / Queue | >= 25 | 10.00 | **MISSED** |" in out
    assert "| ring | hop | <= 1.5 | 1.20 | met |" in out
    assert "_`chain` was not in this run._" in out  # a benchmark the run did not cover is not left stale
    assert "The machine was loaded" in out  # load 4.0 on 2 cores
    assert report.fill(out, report.blocks(doc), "run.json") == out  # filling again changes nothing
