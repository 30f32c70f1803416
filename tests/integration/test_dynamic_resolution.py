"""Dynamic resolution end to end through a real nginx-rtmp: the pushed size changes by command while
the source keeps its own, and viewers of every kind follow.

A 1280x720 test pattern (burned-in frame stamps) is encoded and pushed; the encoder's `resolution` is
set to 360p with `mediaengine ctl` and back to 720p with the Python API while it runs.  Watching
what the server relays, with Debian's ffmpeg (`-v error`, so any decode error shows):

- viewer A connected before the first change decodes 1280x720, then 640x360, then 1280x720 frames;
- viewer B joins during 360p (nginx-rtmp hands it the cached sequence header, which must be the new
  one) and decodes 640x360 then 1280x720 frames;
- a `-c copy` recording of the relayed stream (Debian ffmpeg) shows both sizes to ffprobe, decodes with no error, and
  its stamps show no frame lost or reordered at either change.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from mediaengine.control.api import Engine as ApiEngine

from tests.enginekit import ROOT, Engine, decoded_counters, leftovers, wait_for
from tests.helpers import start_recorder
from tests.integration.test_rtmp_push import EventWatcher, stream_key
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(180)]

FPS = 15
TOPOLOGY = f"""\
version: 1
name: dynres
nodes:
  - {{id: src,  kind: test_pattern,  options: {{width: 1280, height: 720, fps: {FPS}}}}}
  - {{id: venc, kind: video_encoder, inputs: {{in: src}}, options: {{bitrate_kbps: 1200, gop_s: 1}}}}
  - {{id: push, kind: rtmp_sender,   inputs: {{video: venc}}, options: {{url: "${{PUSH_URL}}"}}}}
"""
BIG, SMALL = (1280, 720), (640, 360)


def _viewer(url: str, out: Path, copy: Path | None = None) -> subprocess.Popen[bytes]:
    """Debian ffmpeg decoding what the server relays, one line per decoded frame (framemd5: its size in
    bytes tells the resolution); `-autoscale 0` keeps each frame's own size; errors go to a .err file.
    With `copy`, the same process also writes what it received, untouched, to that FLV file."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", "4000000", "-i", url, "-map", "0:v",
           "-autoscale", "0", "-f", "framemd5", "-flush_packets", "1", "-y", str(out)]
    if copy is not None:
        cmd += ["-map", "0:v", "-c", "copy", "-f", "flv", "-y", str(copy)]
    with open(out.with_suffix(".err"), "wb") as err:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)


def _decoded_sizes(framemd5: Path) -> list[tuple[int, int]]:
    by_bytes = {w * h * 3 // 2: (w, h) for w, h in (BIG, SMALL)}
    if not framemd5.exists():
        return []
    lines = [line for line in framemd5.read_text().splitlines() if line and not line.startswith("#")]
    return [by_bytes.get(int(line.split(",")[4]), (0, 0)) for line in lines]


def _runs(sizes: list[tuple[int, int]]) -> list[tuple[tuple[int, int], int]]:
    return [(size, len(list(group))) for size, group in itertools.groupby(sizes)]


def _file_sizes(path: Path) -> list[tuple[int, int]]:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=width,height", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    rows = [line.split(",") for line in out.stdout.split()]
    return [(int(r[0]), int(r[1])) for r in rows if len(r) >= 2 and r[0].isdigit() and r[1].isdigit()]


def _sequence_headers(flv: Path) -> list[bytes]:
    """The AVCDecoderConfigurationRecord of every AVC sequence header tag in an FLV file, in order
    (video tag, codec 7 = AVC, AVCPacketType 0)."""
    data = flv.read_bytes()
    assert data[:3] == b"FLV", flv
    pos = int.from_bytes(data[5:9], "big") + 4  # header, then PreviousTagSize0
    found = []
    while pos + 11 <= len(data):
        kind, size = data[pos], int.from_bytes(data[pos + 1:pos + 4], "big")
        body = data[pos + 11:pos + 11 + size]
        if kind == 9 and len(body) > 5 and body[0] & 0x0F == 7 and body[1] == 0:
            found.append(body[5:])
        pos += 11 + size + 4
    return found


def _ctl(eng: Engine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MEDIAENGINE_RUNTIME_DIR": str(eng.runtime_dir)}
    return subprocess.run([sys.executable, "-m", "mediaengine.cli", "ctl", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)


def _frames(eng: Engine) -> int:
    return sum((eng.node("src")["metrics"].get("frames_out") or {}).values())


def test_viewers_before_and_after_a_resolution_change_decode_both_sizes(
        engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tmp_path: Path) -> None:
    url = rtmp_server.url(stream=stream_key())
    topo = tmp_path / "dynres.yaml"
    topo.write_text(TOPOLOGY)
    rec = tmp_path / "relayed.flv"
    recorder = start_recorder(url, rec, rw_timeout_s=4.0)  # waits for the publisher: gets the stream from its start
    viewer_a = _viewer(url, tmp_path / "a.framemd5")
    viewer_b: subprocess.Popen[bytes] | None = None
    eng = engine_runner(topo, env={"PUSH_URL": url})
    watcher = EventWatcher(eng)
    try:
        eng.wait_running()
        watcher.wait("connected", 30)
        wait_for(lambda: len(_decoded_sizes(tmp_path / "a.framemd5")) >= 2 * FPS, 30, "viewer A: 2 s of 720p")

        small = _ctl(eng, "venc", "set", "resolution=360p")  # by command
        assert small.returncode == 0, small.stderr
        changed = watcher.wait("resolution_changed", 15, node="venc")
        assert changed["data"] == {"width": 640, "height": 360, "previous": [1280, 720], "resolution": "360p",
                                   "reason": "set"}
        wait_for(lambda: SMALL in _decoded_sizes(tmp_path / "a.framemd5"), 15, "viewer A: the first 360p frame")
        viewer_b = _viewer(url, tmp_path / "b.framemd5", copy=tmp_path / "b.flv")  # joins during 360p
        wait_for(lambda: len(_decoded_sizes(tmp_path / "b.framemd5")) >= 2 * FPS, 30, "viewer B: 2 s of 360p")

        with ApiEngine.attach(runtime_dir=eng.runtime_dir) as api:  # by API
            api.set("venc", resolution="720p")
        watcher.wait("resolution_changed", 15, node="venc", count=2)
        def b_back_at_720p() -> bool:
            last_size, count = _runs(_decoded_sizes(tmp_path / "b.framemd5"))[-1]
            return last_size == BIG and count >= 2 * FPS

        wait_for(b_back_at_720p, 30, "viewer B: 2 s of 720p again")
        watcher.wait("stream_params_changed", 5, count=2)
        restarts = {n["id"]: n["restarts"] for n in eng.ps()["nodes"]}
        assert restarts == {"src": 0, "venc": 0, "push": 0}, eng.log
        wait_for(lambda: eng.node("venc")["metrics"]["actor"]["reopens"] == 2, 5, "venc reopens 2 in its metrics")
    finally:
        watcher.close()
        # viewers and recorder leave first, as a viewer does (SIGINT: ffmpeg finishes its output); after
        # the publisher they would end with rw_timeout's "Input/output error" instead
        ffmpegs = [p for p in (recorder, viewer_a, viewer_b) if p is not None]
        for proc in ffmpegs:
            proc.send_signal(signal.SIGINT)
        for proc in ffmpegs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if eng.proc.poll() is None:
            eng.proc.send_signal(signal.SIGINT)
        code = eng.wait(60)
    assert code == 0, eng.log

    # the live viewers: every frame decoded, at the size of its part of the stream, and no error
    for name, want in (("a", [BIG, SMALL, BIG]), ("b", [SMALL, BIG])):
        runs = _runs(_decoded_sizes(tmp_path / f"{name}.framemd5"))
        errors = (tmp_path / f"{name}.err").read_text()
        print(f"viewer {name}: {runs} errors={errors!r}")
        assert [size for size, _ in runs] == want, (name, runs)
        assert all(n >= FPS for _, n in runs), (name, runs)
        assert errors == "", (name, errors)

    # the recording of the relayed stream plays across both changes
    assert (rec.with_suffix(".log")).read_text() == ""
    sizes = _file_sizes(rec)
    runs = _runs(sizes)
    print(f"recording: {runs}")
    assert [size for size, _ in runs] == [BIG, SMALL, BIG], runs
    decode = subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-i", str(rec), "-f", "null", "-"],
                            capture_output=True, text=True, timeout=120)
    assert decode.returncode == 0 and decode.stderr == "", decode.stderr
    counters = decoded_counters(rec)  # the source's frame stamps, read at both sizes
    assert len(counters) == len(sizes)
    assert all(b == a + 1 for a, b in itertools.pairwise(counters)), \
        [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(counters)) if b != a + 1]

    # the sequence headers: the publisher sent one per size (720p, 360p, 720p again), nginx-rtmp relayed
    # each to the viewer watching, and handed the one that joined later its cached 360p header first
    headers = _sequence_headers(rec)
    assert len(headers) == 3 and headers[0] != headers[1] != headers[2], [h.hex() for h in headers]
    late = _sequence_headers(tmp_path / "b.flv")
    assert late[:2] == headers[1:], ([h.hex() for h in late], [h.hex() for h in headers])
    procs, segs = leftovers(eng.runtime_dir, eng.engine_ids)
    assert not procs and not segs
