"""A failing peripheral stops only itself: recorders on a full filesystem give up, the RTMP push runs on.

Two recorders write to a 256 KiB tmpfs that fills within seconds: `rec` is in a group with
`restart: temporary` (it is restarted until the group's own intensity is spent, then the group gives
up alone), `rec2` is a `restart: temporary` node (never restarted).  The engine-wide intensity is 2,
so if the recorders' restarts counted against it the engine, and the push with it, would stop.  What
nginx-rtmp relays is pulled by Debian's ffmpeg for the whole run: the sender keeps its one connection,
the server relays every packet it sent, the relayed stream has no hole while the recorders fail and no
stall anywhere, and it runs on for more than 60 s after they gave up.  (Frames the source, encoder or
sender's own drop policy skip under CPU load on a shared machine are bounded, not forbidden: they are
not gaps in the push.)
"""

from __future__ import annotations

import itertools
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mediaengine.sdk.errors import ERRORS_BY_CODE, DiskFullError, GroupGaveUpError, ResourceError

from tests.enginekit import Engine, max_gap, video_pts, wait_for
from tests.helpers import start_recorder
from tests.integration.test_rtmp_push import EventWatcher
from tests.mounts import small_tmpfs
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.fault, pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(300)]

RUN_S = 100  # the engine's --duration: the recorders give up within ~15-30 s, the push has 60 s after that


def _topology(tmp_path: Path, full: Path) -> Path:
    topo = tmp_path / "peripheral.yaml"
    topo.write_text(
        "version: 1\n"
        # heartbeat_timeout_s: on a 2-core machine shared with other test runs (load 10 seen) an
        # encoder starved of CPU for 1.5 s was taken for hung; that is not what this test is about
        "supervisor: {intensity: 2, period_s: 120, heartbeat_timeout_s: 5}\n"
        "nodes:\n"
        "  - {id: src,  kind: test_pattern,  options: {width: 640, height: 360, fps: 25}}\n"
        "  - {id: tone, kind: tone}\n"
        "  - {id: venc, kind: video_encoder, inputs: {in: src}, options: {bitrate_kbps: 1500, gop_s: 1, "
        "preset: veryfast, tune: zerolatency}}\n"
        "  - {id: aenc, kind: audio_encoder, inputs: {in: tone}}\n"
        "  - {id: push, kind: rtmp_sender,   inputs: {video: venc, audio: aenc}, options: {url: \"${PUSH_URL}\"}}\n"
        f"  - {{id: rec,  kind: recorder, inputs: {{video: venc, audio: aenc}}, options: {{path: {full / 'a.mp4'}}}}}\n"
        f"  - {{id: rec2, kind: recorder, inputs: {{video: venc}}, restart: temporary, "
        f"options: {{path: {full / 'b.mp4'}}}}}\n"
        "groups:\n"
        "  extras: {members: [rec], restart: temporary, intensity: 3, period_s: 120}\n"
    )
    return topo


def test_recorders_on_a_full_disk_give_up_alone_and_the_push_runs_on(
    engine_runner: Callable[..., Engine], rtmp_server: RtmpServer, tmp_path: Path
) -> None:
    url = rtmp_server.url(stream="peripheral")
    pulled = tmp_path / "pulled.flv"  # on the real disk, not on the full tmpfs
    puller: subprocess.Popen[bytes] | None = None
    try:
        with small_tmpfs(tmp_path / "full", "256k") as full:
            eng = engine_runner(_topology(tmp_path, full), "--duration", str(RUN_S), env={"PUSH_URL": url})
            watch = EventWatcher(eng)
            try:
                eng.wait_running(60)
                # a viewer from the moment the push is up (before that, ffmpeg would give up waiting)
                connected_at = watch.wait("connected", 30)["t"]
                puller = start_recorder(url, pulled, rw_timeout_s=8.0)  # exits when the publisher ends
                joined_at = time.time()

                def both_gave_up() -> dict[str, dict[str, Any]] | None:
                    watch.poll()
                    nodes = {n["id"]: n for n in eng.ps()["nodes"]}
                    return nodes if nodes["rec"]["state"] == nodes["rec2"]["state"] == "failed" else None

                nodes = wait_for(both_gave_up, 60, "both recorders to give up on the full disk")
                print("after the give-up:", {k: (v["state"], v["restarts"]) for k, v in nodes.items()})
                watch.poll()
                events = list(watch.events)

                # rec2 (temporary node): not restarted, its own error reported with its code
                rec2 = [e for e in events if e["node"] == "rec2" and e["name"] == "gave_up"]
                assert len(rec2) == 1 and nodes["rec2"]["restarts"] == 0
                assert issubclass(ERRORS_BY_CODE[rec2[0]["data"]["code"]], ResourceError)
                assert rec2[0]["data"]["code"] == DiskFullError.code, rec2
                assert "no space left" in rec2[0]["data"]["error"]
                # rec (temporary group, intensity 3): restarted 3 times, then the group gave up alone
                group = [e for e in events if e["name"] == "group_gave_up"]
                assert len(group) == 1 and group[0]["data"]["group"] == "extras"
                assert group[0]["data"]["code"] == GroupGaveUpError.code
                assert nodes["rec"]["restarts"] == 3
                rec_errors = [e["data"] for e in events if e["node"] == "rec" and e["name"] == "error"]
                assert rec_errors and all(d["code"] == DiskFullError.code for d in rec_errors), rec_errors
                # more restarts than the engine-wide intensity (2) happened, and nothing else was touched
                assert all(nodes[n]["state"] == "running" and nodes[n]["restarts"] == 0
                           for n in ("src", "tone", "venc", "aenc", "push")), nodes
                gave_up_at = max(e["t"] for e in events if e["name"] in ("gave_up", "group_gave_up"))
                first_error_at = min(e["t"] for e in events if e["name"] == "error")

                assert eng.wait(RUN_S + 60) == 0, eng.log
                watch.poll(300)  # the last metrics every node sent when it stopped
                final = dict(watch.metrics)
                assert not watch.named("connection_lost")
            finally:
                watch.close()
        # ffmpeg ends when the publisher does; it may call that end an I/O error (nginx closes the stream),
        # so what it wrote is judged below, not its exit status
        assert puller is not None
        puller.wait(60)
    finally:
        if puller is not None and puller.poll() is None:
            puller.kill()
            puller.wait()

    # the push never stopped: one connection, the server relayed what was sent, and the relayed stream
    # runs on for more than 60 s after the give-up
    push, venc = final["push"]["actor"], final["venc"]["actor"]
    encoded, sent = venc["packets_out"], push["packets_sent_by_stream"]["video"]
    pts = video_pts(pulled)

    def stream_time(t: float) -> float:  # wall clock -> relayed stream time (the viewer joined at pts[0])
        return pts[0] + max(0.0, t - joined_at)

    after_s = pts[-1] - stream_time(gave_up_at)
    print(f"encoder made {encoded} video packets, sender sent {sent}, server relayed {len(pts)} "
          f"({pts[0]:.2f}..{pts[-1]:.2f}s, largest pts step {max_gap(pts):.3f}s), {after_s:.0f}s after the give-up")
    print("sender drops (its own policy under CPU load; never a lost connection):", push["dropped_reasons"])
    assert push["reconnects"] == 0 and push["connection_losses"] == 0
    assert "connection_lost" not in push["dropped_reasons"]
    # the sender's own backlog policy drops under CPU load (3.5% seen at load 15 on 2 cores), wherever
    # the recorders are; bounded here, and forbidden outright around the failures (below)
    assert push["dropped"]["video"] <= 0.1 * sent
    # the server relayed what was sent since the viewer joined (ffmpeg takes a moment to start and
    # begins at a keyframe: up to 2 s seen under load, 5 s allowed); the holes are judged below
    assert sent - 25 * (joined_at - connected_at + 5.0) <= len(pts) <= sent
    assert after_s >= 60
    # no hole in the relayed stream while the recorders failed, restarted and gave up (stream time ~
    # wall time since the viewer joined), and nothing like a stall anywhere
    failing = (stream_time(first_error_at) - 2.0, stream_time(gave_up_at) + 5.0)
    steps = [(a, b - a) for a, b in itertools.pairwise(pts)]
    print(f"recorders failing at stream time {failing[0]:.1f}..{failing[1]:.1f}s; steps > 0.1 s:",
          [(round(a, 2), round(d, 2)) for a, d in steps if d > 0.1])
    during = max((d for a, d in steps if failing[0] <= a <= failing[1]), default=0.0)
    elsewhere = max((d for a, d in steps if not failing[0] <= a <= failing[1]), default=0.0)
    # the failures add no hole: none over 0.2 s, or (on a machine so loaded that the sender's backlog
    # policy drops frames all along) none larger than the load makes elsewhere in the same run
    assert during <= max(0.2, elsewhere), (during, elsewhere)
    assert max_gap(pts) <= 2.0  # no stall anywhere (1.0 s seen under load, far from the failures)
    # and the pictures are the source's, in order: burned-in counters never go back (a few stamps do
    # not survive 1.5 Mbit/s x264 on moving bars: 2.6% seen under load; a counter repeats when the
    # encoder repeats its last picture while a starved source catches up, by design)
    counters = readable_counters(pulled)
    assert len(counters) >= 0.9 * len(pts)
    assert all(b >= a for a, b in itertools.pairwise(counters))


def readable_counters(path: Path) -> list[int]:
    """Burned-in frame counters of the decoded frames whose stamp survived compression."""
    import av
    from mediaengine.sdk.stamp import read

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            stamp = read(frame.to_ndarray(format="rgb24"))
            if stamp is not None:
                out.append(stamp.counter)
    return out


def test_a_permanent_group_counts_against_the_engine_once_per_exhaustion(
    engine_runner: Callable[..., Engine], tmp_path: Path
) -> None:
    """Group intensity 1, engine intensity 1: the group's 2nd restart exhausts it and escalates (the
    engine's 1st); its 3rd is a fresh start of the group; its 4th escalates again: the engine's 2nd,
    one too many.  Counted engine-wide, the 2nd kill would already have stopped the engine."""
    topo = tmp_path / "escalate.yaml"
    topo.write_text(
        "version: 1\n"
        "supervisor: {intensity: 1, period_s: 120}\n"
        "nodes:\n"
        "  - {id: src, kind: test_pattern, options: {width: 320, height: 180, fps: 15}}\n"
        "  - {id: filt, kind: overlay, inputs: {in: src}}\n"
        f"  - {{id: snap, kind: snapshot, inputs: {{in: filt}}, options: {{path: {tmp_path / 's.png'}}}}}\n"
        "groups:\n"
        "  chain: {members: [filt], intensity: 1, period_s: 120}\n"
    )
    eng = engine_runner(topo, "--allow-faults")
    eng.wait_running()
    for n in range(3):
        wait_for(lambda n=n: (x := eng.node("filt"))["state"] == "running" and x["restarts"] == n, 20,
                 f"filt running after {n} restarts")
        eng.request("fault", node="filt", fault="kill", args={})
    wait_for(lambda: (x := eng.node("filt"))["state"] == "running" and x["restarts"] == 3, 20,
             "filt running after 3 restarts")
    events = _events(eng)
    assert [e["data"]["group"] for e in events if e["name"] == "group_escalated"] == ["chain"]
    assert eng.node("src")["restarts"] == 0 and eng.node("snap")["restarts"] == 0
    eng.request("fault", node="filt", fault="kill", args={})
    assert eng.wait(30) == 1, eng.log
    assert "group 'chain': more than 1 restarts within 120s" in eng.log
    assert "the engine allows no more than 1 restarts within 120s" in eng.log and "error 1501" in eng.log


def _events(eng: Engine) -> list[dict[str, Any]]:
    return list(eng.request("snapshot").get("events_recent", []))
