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

from mediaengine.sdk.errors import AudioBackendError, DeviceBusyError, DeviceNotFoundError, OptionError

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
