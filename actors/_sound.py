"""Sound devices through PortAudio (`sounddevice`): naming a device, listing them, opening a stream, typed errors.

Shared by `microphone` (input) and `audio_out` (output).  A `device` option is one of:

- `default`: PortAudio's default device of that direction;
- an index `N` as `mediaengine ctl <node> devices` lists it;
- `pulse:NAME`: a PulseAudio (or PipeWire-pulse) source or sink by name, e.g. `pulse:mic.monitor`,
  reached through PortAudio's `pulse` ALSA device with `PULSE_SOURCE` / `PULSE_SINK` set in the actor's
  own process;
- any other text: a PortAudio device whose name contains it (`USB Audio`, `hw:1,0`).

PyAV's own ALSA input cannot be used for this: its wheel bundles a libasound without the plugins and
configuration that reach PulseAudio.  Errors name the device and the fix: `DeviceNotFoundError` (1320),
`DeviceBusyError` (1321), `DeviceLostError` (1322), and `AudioBackendError` (1340) when PortAudio or
`sounddevice` is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

from mediaengine.sdk.errors import (
    AudioBackendError,
    DeviceBusyError,
    DeviceLostError,
    DeviceNotFoundError,
    OptionError,
)

Direction = Literal["input", "output"]

INSTALL_HINT = "pip install 'mediaengine[audio]' and apt-get install libportaudio2"


def sounddevice() -> ModuleType:
    """The `sounddevice` module, or AudioBackendError saying what to install."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as exc:  # OSError: the module is there, libportaudio is not
        raise AudioBackendError(f"sound devices need PortAudio and sounddevice ({exc}): {INSTALL_HINT}") from exc
    return sd


@dataclass(frozen=True)
class DeviceName:
    """What a `device` option names (see the module docstring)."""

    kind: Literal["default", "index", "pulse", "name"]
    value: str = ""

    def describe(self) -> str:
        return {"default": "the default device", "index": f"device #{self.value}",
                "pulse": f"PulseAudio {self.value!r}", "name": f"device {self.value!r}"}[self.kind]


def parse_device(text: str) -> DeviceName:
    """A `device` option as a `DeviceName`; OptionError for an empty one (checked when the topology loads)."""
    t = text.strip()
    if not t:
        raise OptionError("device is empty: use default, an index, pulse:NAME or part of a device name")
    if t == "default":
        return DeviceName("default")
    if t.isdigit():
        return DeviceName("index", t)
    if t.startswith("pulse:"):
        name = t.removeprefix("pulse:")
        if not name:
            raise OptionError("pulse: needs a source or sink name, e.g. pulse:mic.monitor")
        return DeviceName("pulse", name)
    return DeviceName("name", t)


def list_devices(sd: ModuleType, direction: Direction | None = None) -> list[dict[str, Any]]:
    """Every PortAudio device (of one direction if given): index, name, host API, channels, default rate."""
    apis = [api["name"] for api in sd.query_hostapis()]
    out = []
    for d in sd.query_devices():
        if direction == "input" and d["max_input_channels"] < 1:
            continue
        if direction == "output" and d["max_output_channels"] < 1:
            continue
        out.append({"index": d["index"], "name": d["name"], "hostapi": apis[d["hostapi"]],
                    "inputs": d["max_input_channels"], "outputs": d["max_output_channels"],
                    "default_rate": d["default_samplerate"]})
    return out


def resolve(sd: ModuleType, name: DeviceName, direction: Direction) -> int | str | None:
    """The `device` argument for a sounddevice stream; DeviceNotFoundError listing what there is."""
    if name.kind == "default":
        return None
    target: int | str = int(name.value) if name.kind == "index" else name.value
    if name.kind == "pulse":
        os.environ["PULSE_SOURCE" if direction == "input" else "PULSE_SINK"] = name.value
        target = "pulse"
    try:
        info = sd.query_devices(target, direction)
    except (ValueError, sd.PortAudioError) as exc:
        names = ", ".join(f"{d['index']}: {d['name']}" for d in list_devices(sd, direction)) or "none"
        raise DeviceNotFoundError(f"no {direction} sound device {name.describe()} ({exc}); devices: {names}"
                                  + (" (PulseAudio needs Debian's libasound2-plugins for the `pulse` device)"
                                     if name.kind == "pulse" else "")) from exc
    return int(info["index"])


def open_error(sd: ModuleType, exc: Exception, name: DeviceName, direction: Direction) -> Exception:
    """The typed error for a stream that failed to open or start."""
    text = str(exc)
    if "busy" in text.lower() or "unavailable" in text.lower():
        return DeviceBusyError(f"{direction} sound device {name.describe()} is busy or unavailable ({text}); "
                               "close the program using it or pick another device")
    return DeviceNotFoundError(f"cannot open {direction} sound device {name.describe()}: {text}"
                               + (f" (is there a PulseAudio {'source' if direction == 'input' else 'sink'} "
                                  f"named {name.value!r}? `pactl list short "
                                  f"{'sources' if direction == 'input' else 'sinks'}`)"
                                  if name.kind == "pulse" else ""))


# ---- output sinks -----------------------------------------------------------------------------------------

class PortAudioSink:
    """An output device through PortAudio, written without blocking (what `write_available` allows)."""

    def __init__(self, sd: ModuleType, name: DeviceName, rate: int, channels: int, latency_s: float) -> None:
        self.sd = sd
        device = resolve(sd, name, "output")
        try:
            self.stream = sd.OutputStream(device=device, samplerate=rate, channels=channels, dtype="int16",
                                          latency=latency_s)
            self.stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            raise open_error(sd, exc, name, "output") from exc
        self.latency_s = float(self.stream.latency)
        self.index = device

    def write(self, pcm: Any) -> int:
        """Write what the device takes now; returns how many samples."""
        try:
            n = min(self.stream.write_available, pcm.shape[0])
            if n:
                self.stream.write(pcm[:n].copy())
        except self.sd.PortAudioError as exc:
            raise DeviceLostError(f"output sound device failed while playing: {exc}") from exc
        return int(n)

    def problem(self) -> str | None:
        return None if self.stream.active else "the stream stopped"

    def close(self) -> None:
        try:
            self.stream.abort()
            self.stream.close()
        except self.sd.PortAudioError:
            pass


class PacatSink:
    """A PulseAudio sink through `pacat` (pulseaudio-utils), PulseAudio's own client, fed through a
    non-blocking pipe.  Used for `pulse:NAME` outputs: PortAudio's way to PulseAudio (the ALSA `pulse`
    plugin) was measured to play far slower than real time into a null sink on the test machines."""

    def __init__(self, name: DeviceName, rate: int, channels: int, latency_s: float) -> None:
        import shutil
        import subprocess

        exe = shutil.which("pacat")
        if exe is None:
            raise AudioBackendError("pulse: outputs need pacat: apt-get install pulseaudio-utils")
        self.name = name
        self.latency_s = latency_s
        self.index = name.value
        self.proc = subprocess.Popen(
            [exe, "--playback", f"--device={name.value}", "--raw", "--format=s16le", f"--rate={rate}",
             f"--channels={channels}", f"--latency-msec={max(5, round(latency_s * 1000))}",
             "--stream-name=mediaengine audio_out"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stderr is not None
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.fd = self.proc.stdin.fileno()

    def write(self, pcm: Any) -> int:
        data = pcm.astype("<i2", copy=False).tobytes()
        try:
            n = os.write(self.fd, data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:
            return 0  # pacat ended: `problem()` says why
        frame = pcm.shape[1] * 2
        return n // frame if n % frame == 0 else self._partial(data, n, frame)

    def _partial(self, data: bytes, n: int, frame: int) -> int:
        """Finish a sample frame cut by the pipe (blocking for a few bytes) so the stream stays aligned."""
        rest = frame - n % frame
        os.set_blocking(self.fd, True)
        try:
            os.write(self.fd, data[n:n + rest])
        finally:
            os.set_blocking(self.fd, False)
        return (n + rest) // frame

    def problem(self) -> str | None:
        if self.proc.poll() is None:
            return None
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace").strip() or f"pacat exited {self.proc.returncode}"

    def close(self) -> None:
        for stream in (self.proc.stdin, self.proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(5)
