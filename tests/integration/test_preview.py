"""The preview in a real engine, read by real clients: Debian's ffmpeg reads the MJPEG URL and gets live
frames (the test pattern's stamps, counting up); Debian's headless Chromium opens the page and its
screenshot shows the live picture; a second preview node opens its window on an Xvfb display and the
display shows the live picture (grabbed with FFmpeg's x11grab).  One engine runs all three."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from mediaengine.sdk.stamp import read

from tests.enginekit import Engine, wait_for
from tests.xdisplay import xvfb

pytestmark = [pytest.mark.integration]

W, H = 640, 360

TOPOLOGY = f"""
version: 1
nodes:
  - {{id: src,  kind: test_pattern, options: {{width: {W}, height: {H}, fps: 30}}}}
  - {{id: web,  kind: preview, inputs: {{in: src}}, options: {{mode: http, port: 0, max_fps: 10, quality: 90}}}}
  - {{id: win,  kind: preview, inputs: {{in: src}}, options: {{mode: window, max_fps: 10}}}}
"""


@contextmanager
def process_group(cmd: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    """Run `cmd` in its own session; afterwards kill that session (Chromium forks helpers) by its id."""
    proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        try:  # helpers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def mjpeg_frames(url: str, count: int) -> list[np.ndarray]:
    """`count` pictures read from the MJPEG stream by ffmpeg (rgb24)."""
    out = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-rw_timeout", "5000000", "-i", url,
                          "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return list(np.frombuffer(out.stdout, np.uint8).reshape(count, H, W, 3))


def grab_screen(display: str) -> np.ndarray:
    with av.open(f"{display}.0", format="x11grab", options={"video_size": f"{W}x{H}", "framerate": "10"}) as c:
        return next(c.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed "
                    "(scripts/bootstrap.sh installs it)")
def test_preview_mjpeg_browser_and_window_show_the_live_picture(engine_runner: Callable[..., Engine],
                                                                tmp_path: Path) -> None:
    topo = tmp_path / "preview.yaml"
    topo.write_text(TOPOLOGY)
    with xvfb(W + 160, H + 120) as display:
        eng = engine_runner(topo, "--duration", "60", env={"DISPLAY": display})
        eng.wait_running()
        port = eng.request("command", node="web", command="url", args={})["port"]
        url = f"http://127.0.0.1:{port}/"
        assert eng.request("command", node="win", command="url", args={})["window"] in ("opencv", "tk")

        # 1. ffmpeg reads the MJPEG URL: live pictures, counting up
        frames = mjpeg_frames(url + "stream.mjpg", 5)
        counters = [s.counter for s in map(read, frames) if s is not None]
        assert len(counters) == 5 and counters == sorted(counters) and counters[-1] > counters[0], counters
        # at most 10 pictures a second: 5 pictures span at least 4 x 100 ms of the 30 fps source
        assert counters[-1] - counters[0] >= 4 * 3 - 1, counters

        # 2. the page in headless Chromium: the screenshot shows the live picture (the stamp reads)
        shot = tmp_path / "page.png"
        with process_group(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            f"--user-data-dir={tmp_path / 'chromium'}", f"--window-size={W},{H + 40}",
                            "--virtual-time-budget=3000", f"--screenshot={shot}", url],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as browser:
            browser.wait(90)
        png = cv2.imread(str(shot))
        assert png is not None, "Chromium wrote no screenshot"
        page = np.asarray(cv2.cvtColor(png, cv2.COLOR_BGR2RGB))
        stamp = read(np.ascontiguousarray(page[:H, :W]))
        assert stamp is not None and stamp.counter > 0, "the screenshot does not show the live picture"

        # 3. the window on the Xvfb display shows the live picture, and it moves on
        first = wait_for(lambda: read(grab_screen(display)), 20, "the window to show the picture")
        later = wait_for(lambda: (s := read(grab_screen(display))) and s.counter > first.counter and s, 10,
                         "the window to show newer pictures")
        assert later.counter > first.counter
        eng.stop(30)
