"""A private PulseAudio sound server for the audio tests: real capture and playback devices without a sound card.

`PulseServer(folder)` runs Debian's `pulseaudio` in the foreground as a child of the test, with its own
0700 runtime folder (socket, pid file, cookie and state all inside it, nothing in the user's home), and
two null sinks:

- `mic`: a test plays a known signal into it (`paplay --device=mic`); its capture source `mic.monitor`
  is what the engine's `microphone` records, as if someone spoke into a microphone;
- `monitor`: the in-ear monitor output (`audio_out` plays to it); the test records `monitor.monitor`
  to hear what the streamer would hear.

Clients (the engine's actors, paplay, parec) reach it through `env()`: `PULSE_SERVER` names the socket
and `PULSE_SOURCE` / `PULSE_SINK` pick the defaults.  The server is stopped by its PID (SIGTERM, then
SIGKILL after a grace period), and `stop()` is safe to call twice.  Needs
`apt-get install pulseaudio pulseaudio-utils libasound2-plugins libportaudio2` (scripts/bootstrap.sh).
See shared notes: PyAV's bundled ALSA cannot reach PulseAudio, so devices go through PortAudio.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import wait_for

RATE = 48000  # the null sinks' rate: what the tests play and record at


class PulseServer:
    """One `pulseaudio` process with the null sinks `mic` and `monitor` (see the module docstring)."""

    def __init__(self, folder: Path, rate: int = RATE) -> None:
        self.folder = folder
        self.rate = rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = folder / "pulseaudio.log"

    @property
    def socket(self) -> Path:
        return self.folder / "pulse" / "native"

    def env(self, source: str = "mic.monitor", sink: str = "monitor") -> dict[str, str]:
        """Environment for a client of this server (an engine, paplay, parec)."""
        return {"PULSE_SERVER": f"unix:{self.socket}", "XDG_RUNTIME_DIR": str(self.folder),
                "PULSE_SOURCE": source, "PULSE_SINK": sink, "PULSE_CLIENTCONFIG": "/dev/null"}

    def start(self, timeout_s: float = 15.0) -> None:
        if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
            pytest.skip("needs `apt-get install pulseaudio pulseaudio-utils` (scripts/bootstrap.sh)")
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        env = {**os.environ, "XDG_RUNTIME_DIR": str(self.folder), "HOME": str(self.folder),
               "XDG_CONFIG_HOME": str(self.folder / "config"), "XDG_STATE_HOME": str(self.folder / "state")}
        sink = f"rate={self.rate} channels=2"
        cmd = ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "--use-pid-file=no",
               "--disallow-exit", "--log-target=stderr",
               "--load=module-native-protocol-unix auth-anonymous=1",
               f"--load=module-null-sink sink_name=mic {sink}",
               f"--load=module-null-sink sink_name=monitor {sink}"]
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        try:
            wait_for(self._ready, timeout_s, "pulseaudio to list the mic.monitor source")
        except AssertionError:
            self.stop()
            raise AssertionError(f"pulseaudio did not start:\n{self.log_path.read_text(errors='replace')}") from None

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"pulseaudio exited:\n{self.log_path.read_text(errors='replace')}")
        out = self.pactl("list", "short", "sources", check=False)
        return "mic.monitor" in out and "monitor.monitor" in out

    def pactl(self, *args: str, check: bool = True) -> str:
        res = subprocess.run(["pactl", *args], env={**os.environ, **self.env()}, capture_output=True,
                             text=True, timeout=10, check=False)
        if check and res.returncode != 0:
            raise AssertionError(f"pactl {' '.join(args)} failed: {res.stderr}")
        return res.stdout

    def play(self, pcm: np.ndarray, sink: str = "mic", rate: int | None = None) -> subprocess.Popen[bytes]:
        """Start playing int16 PCM (samples, channels) into `sink` in real time; the caller waits for it
        (`finish_play`).  paplay paces itself by the sink's clock; its 500 ms buffer in the server keeps a
        loaded machine (paplay not scheduled in time) from inserting silence into what is played."""
        channels = 1 if pcm.ndim == 1 else pcm.shape[1]
        proc = subprocess.Popen(
            ["paplay", f"--device={sink}", "--raw", f"--rate={rate or self.rate}", f"--channels={channels}",
             "--format=s16le", "--latency-msec=500"],
            env={**os.environ, **self.env()}, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(np.ascontiguousarray(pcm, dtype="<i2").tobytes())
        proc.stdin.close()
        return proc

    def record(self, source: str, dest: Path, channels: int = 1) -> subprocess.Popen[bytes]:
        """Start recording `source` (e.g. `monitor.monitor`) as raw s16le at the server's rate into `dest`;
        stop it with `stop_process`."""
        out = open(dest, "wb")  # noqa: SIM115 - handed to the child, closed below
        try:
            return subprocess.Popen(
                ["parec", f"--device={source}", "--raw", f"--rate={self.rate}", f"--channels={channels}",
                 "--format=s16le", "--latency-msec=10"],
                env={**os.environ, **self.env()}, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.DEVNULL)
        finally:
            out.close()

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """Stop a child of the test by its PID (SIGTERM, SIGKILL after `grace_s`) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()


def finish_play(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Wait for a `play` to end (the signal fully played); stop it by PID if it overruns."""
    deadline = time.monotonic() + timeout_s
    try:
        proc.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError(f"paplay did not finish within {timeout_s:g}s") from None
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    stop_process(proc)
    assert proc.returncode == 0, f"paplay failed ({proc.returncode}): {err}"


@pytest.fixture
def pulse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PulseServer]:
    """A running private PulseAudio (null sinks `mic` and `monitor`), stopped by PID even if the test fails."""
    # a short path: the socket path must fit in sockaddr_un (108 bytes)
    server = PulseServer(Path(tmp_path_factory.mktemp("pa", numbered=True)))
    try:
        server.start()
        yield server
    finally:
        server.stop()
