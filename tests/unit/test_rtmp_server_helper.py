"""tools.rtmp_server: the local nginx-rtmp that users try pushes against and the other tests rely on.

What is checked is what a user of the helper cares about: a push is relayed with its codecs and every
frame (verified with Debian's ffmpeg/ffprobe, not PyAV), HLS is served, stop/kill really end nginx and
free the port, a restart comes back on the same port, and a missing install says how to fix it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import psutil
import pytest
from mediaengine.sdk.errors import ResourceError

from tests.helpers import ffprobe_json, open_push, push_synthetic, start_recorder, wait_for
from tools.rtmp_server import RtmpServer, port_accepts

pytestmark = pytest.mark.rtmp

REPO = Path(__file__).resolve().parents[2]


def _group(pid: int) -> list[psutil.Process]:
    master = psutil.Process(pid)
    return [master, *master.children()]


def _dead(proc: psutil.Process) -> bool:
    """Gone, or a zombie waiting for init to reap it (it holds no port and runs no code)."""
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_push_is_relayed_with_h264_aac_and_every_frame(rtmp_server: RtmpServer, tmp_path: Path) -> None:
    recording = tmp_path / "relayed.flv"
    recorder = start_recorder(rtmp_server.url(), recording)
    try:
        wait_for(lambda: len(rtmp_server.clients()) == 1, 5.0, "the recorder to wait on live/test")
        pushed = push_synthetic(rtmp_server.url(), duration_s=2.0, width=320, height=240, fps=30)
        recorder.wait(timeout=20)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()

    info = ffprobe_json(recording, "-count_packets", "-show_streams", "-show_format")
    streams = {s["codec_type"]: s for s in info["streams"]}
    assert streams["video"]["codec_name"] == "h264"
    assert (streams["video"]["width"], streams["video"]["height"]) == (320, 240)
    assert streams["video"]["r_frame_rate"] == "30/1"
    assert streams["audio"]["codec_name"] == "aac"
    assert (int(streams["audio"]["sample_rate"]), streams["audio"]["channels"]) == (44100, 2)
    assert pushed.video_packets == 60
    assert int(streams["video"]["nb_read_packets"]) == pushed.video_packets
    assert int(streams["audio"]["nb_read_packets"]) == pushed.audio_packets
    assert float(info["format"]["duration"]) == pytest.approx(2.0, abs=0.1)


def test_stop_ends_every_nginx_process_and_frees_the_ports(rtmp_server: RtmpServer) -> None:
    assert rtmp_server.pid is not None
    group = _group(rtmp_server.pid)
    assert len(group) >= 2  # master + worker
    assert port_accepts(rtmp_server.port) and port_accepts(rtmp_server.http_port)

    rtmp_server.stop()

    assert rtmp_server.pid is None and not rtmp_server.running
    assert [p.pid for p in group if not _dead(p)] == []
    assert not port_accepts(rtmp_server.port)
    assert not port_accepts(rtmp_server.http_port)
    rtmp_server.stop()  # idempotent
    assert rtmp_server.pid is None


def test_kill_then_restart_comes_back_on_the_same_port(rtmp_server: RtmpServer) -> None:
    port, http_port = rtmp_server.port, rtmp_server.http_port
    assert rtmp_server.pid is not None
    group = _group(rtmp_server.pid)

    rtmp_server.kill()
    assert rtmp_server.pid is None
    assert [p.pid for p in group if not _dead(p)] == []
    assert not port_accepts(port)

    rtmp_server.restart()
    assert (rtmp_server.port, rtmp_server.http_port) == (port, http_port)
    assert rtmp_server.pid is not None and rtmp_server.pid != group[0].pid
    pushed = push_synthetic(rtmp_server.url(), duration_s=0.5)
    bytes_in = int(rtmp_server.stat().findtext("bytes_in", "0"))
    assert bytes_in >= pushed.payload_bytes  # the new server received the whole push

    second_pid = rtmp_server.pid
    rtmp_server.restart()  # restart while running = stop + start
    assert rtmp_server.port == port and rtmp_server.pid not in (None, second_pid)
    assert port_accepts(port)


def test_hls_playlist_and_segments_are_served(tmp_path: Path) -> None:
    with RtmpServer(tmp_path / "srv", hls=True) as server:
        push_synthetic(server.url(stream="cam"), duration_s=2.0, gop=15)
        with urllib.request.urlopen(server.hls_url("cam"), timeout=5) as resp:
            playlist = resp.read().decode()
        segments = [line for line in playlist.splitlines() if line.endswith(".ts")]
        assert playlist.startswith("#EXTM3U") and segments, playlist
        first = f"http://127.0.0.1:{server.http_port}/hls/{segments[0]}"
        info = ffprobe_json(first, "-show_streams")
        assert sorted(s["codec_name"] for s in info["streams"]) == ["aac", "h264"]
    assert not port_accepts(server.port)


def test_idle_publisher_is_dropped_so_a_new_one_can_publish(tmp_path: Path) -> None:
    with RtmpServer(tmp_path / "srv", drop_idle_publisher_s=0.5) as server:
        stalled, _video, _audio = open_push(server.url())
        try:
            wait_for(lambda: any(c.publishing for c in server.clients()), 5.0, "the first publisher to be seen")
            # It sends nothing more but keeps its TCP connection: nginx must drop it.
            wait_for(lambda: server.clients() == [], 5.0, "nginx to drop the idle publisher")
            pushed = push_synthetic(server.url(), duration_s=0.5)
            assert pushed.video_packets == 15
        finally:
            with contextlib.suppress(OSError):  # the dropped connection may fail on close
                stalled.close()


def test_missing_nginx_or_module_says_what_to_install(tmp_path: Path) -> None:
    no_nginx = RtmpServer(tmp_path / "a", nginx_bin=tmp_path / "no-such-nginx")
    with pytest.raises(ResourceError, match=r"apt-get install nginx libnginx-mod-rtmp") as err:
        no_nginx.start()
    assert "no-such-nginx" in str(err.value) and no_nginx.pid is None

    no_module = RtmpServer(tmp_path / "b", module_path=tmp_path / "ngx_rtmp_module.so")
    with pytest.raises(ResourceError, match=r"apt-get install nginx libnginx-mod-rtmp"):
        no_module.start()
    assert no_module.pid is None


def test_busy_port_is_a_clear_error(rtmp_server: RtmpServer, tmp_path: Path) -> None:
    other = RtmpServer(tmp_path / "other", port=rtmp_server.port)
    with pytest.raises(ResourceError, match=rf"port {rtmp_server.port} .* already in use"):
        other.start()
    assert other.pid is None and rtmp_server.running


def test_cli_start_background_status_stop(tmp_path: Path) -> None:
    prefix = tmp_path / "cli"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools.rtmp_server", *args, "--prefix", str(prefix)],
            cwd=REPO, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    started = cli("start", "--port", "0", "--background")
    try:
        assert started.returncode == 0, started.stderr
        state = json.loads((prefix / "server.json").read_text())
        assert f"rtmp://127.0.0.1:{state['port']}/live/test" in started.stdout
        assert port_accepts(state["port"])
        status = cli("status")
        assert status.returncode == 0 and f"pid {state['pid']}" in status.stdout
        stopped = cli("stop")
        assert stopped.returncode == 0, stopped.stderr
        assert not port_accepts(state["port"])
        assert cli("status").returncode == 1
    finally:
        if (prefix / "server.json").exists():  # a failed assertion above: do not leave nginx behind
            leftover = json.loads((prefix / "server.json").read_text())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(leftover["pid"], signal.SIGKILL)


def test_nginx_that_fails_to_start_is_reported_with_its_error(tmp_path: Path) -> None:
    fake = tmp_path / "nginx"
    fake.write_text('#!/bin/sh\necho "nginx: [emerg] unknown directive \\"bogus\\"" >&2\nexit 1\n')
    fake.chmod(0o755)
    server = RtmpServer(tmp_path / "srv", nginx_bin=fake)
    with pytest.raises(ResourceError, match=r"nginx exited with status 1(.|\n)*\[emerg\] unknown directive"):
        server.start()
    assert server.pid is None
