"""Camera controls: autofocus, focus, zoom, torch and exposure compensation over a device's V4L2 controls.

Two layers.  A *controls backend* is a device's raw control table (V4L2 names, integer values, ranges,
menus, the "inactive" flag): `V4L2Controls` talks to a real `/dev/videoN` through `linuxpy` (the
VIDIOC_QUERY_EXT_CTRL / G_EXT_CTRLS / S_EXT_CTRLS ioctls), `RecordedControls` holds a table recorded
from a real webcam (`v4l2-ctl --list-ctrls-menus`, kept as JSON test data) and behaves like its driver,
and `NoControls` is a device without any (FFmpeg's `lavfi`, x11grab).  `CameraControls` maps the
engine's camera options onto whatever table it is given::

    controls = CameraControls(V4L2Controls("/dev/video0"))   # or RecordedControls.load(path), NoControls()
    controls.set_focus(40)        # autofocus off, focus_absolute to 40% of its range
    controls.zoom_mode()          # "optical" where the device has zoom_absolute, else "digital"

| option | V4L2 control (first one the device has) | mapping |
|---|---|---|
| `autofocus` | `focus_automatic_continuous`, `focus_auto` | on = 1 |
| `focus` 0..100 | `focus_absolute` | linear over min..max, snapped to the step; turns autofocus off first |
| `zoom` 1..4 | `zoom_absolute` (optical) | linear: 1 -> min, 4 -> max; without it the zoom is digital (crop + scale) |
| `torch` | flash `led_mode` (menu: None/Flash/Torch), `torch_intensity` | on = Torch / full intensity |
| `exposure_compensation` -100..100 | `auto_exposure_bias`, else `brightness` | -100 -> min, 0 -> default, 100 -> max |

Errors are typed: a control the device lacks is `ControlUnsupportedError` (1325; for the torch
`NoTorchError`, 1326), a value the driver refuses is `ControlFailedError` (1327).
"""

from __future__ import annotations

import errno
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .errors import ControlFailedError, ControlUnsupportedError, NoTorchError

__all__ = [
    "AUTOFOCUS_CONTROLS", "EXPOSURE_CONTROLS", "MAX_ZOOM", "TORCH_CONTROLS", "CameraControls", "ControlInfo",
    "ControlsBackend", "NoControls", "RecordedControls", "V4L2Controls", "parse_v4l2_ctl",
    "scale_percent", "scale_signed",
]

#: the largest zoom factor (optical zoom maps 1..MAX_ZOOM onto the control's range; digital crops to 1/MAX_ZOOM)
MAX_ZOOM = 4.0
AUTOFOCUS_CONTROLS = ("focus_automatic_continuous", "focus_auto")
FOCUS_CONTROL = "focus_absolute"
ZOOM_CONTROL = "zoom_absolute"
#: the flash class's `led_mode` (V4L2_CID_FLASH_LED_MODE, menu None/Flash/Torch) or `torch_intensity`; a
#: vendor's indicator LED (Logitech's `led1_mode`) lights nothing and does not count
TORCH_CONTROLS = ("led_mode", "torch_intensity")
EXPOSURE_CONTROLS = ("auto_exposure_bias", "brightness")
#: V4L2 flash `led_mode` menu indices (V4L2_FLASH_LED_MODE_NONE / _TORCH)
FLASH_LED_MODE_OFF, FLASH_LED_MODE_TORCH = 0, 2


@dataclass(frozen=True)
class ControlInfo:
    """One V4L2 control as `v4l2-ctl --list-ctrls-menus` shows it."""

    name: str  # v4l2-ctl's name: focus_absolute, zoom_absolute, ...
    type: str  # int | bool | menu | intmenu | button | ...
    minimum: int
    maximum: int
    step: int
    default: int
    value: int
    inactive: bool = False  # V4L2_CTRL_FLAG_INACTIVE: another control (auto mode) overrides it now
    menu: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["menu"] = {str(k): v for k, v in self.menu.items()}
        return d


class ControlsBackend(Protocol):
    """A device's raw control table: read every control, write one by name."""

    def controls(self) -> dict[str, ControlInfo]:
        """Every control the device has, by v4l2-ctl name, with its current value and flags."""
        ...

    def set(self, name: str, value: int) -> None:
        """Write one control; `OSError` (with the driver's errno) when the device refuses."""
        ...

    def close(self) -> None: ...


class NoControls:
    """A device without V4L2 controls (lavfi, x11grab, avfoundation through FFmpeg)."""

    def controls(self) -> dict[str, ControlInfo]:
        return {}

    def set(self, name: str, value: int) -> None:
        raise OSError(errno.EINVAL, f"no control {name!r}")

    def close(self) -> None:
        return None


#: UVC driver rules: while the auto control (key) has a value other than the listed "manual" one, the
#: controls it governs are inactive and writing them fails with EACCES (drivers/media/usb/uvc, uvc_ctrl.c)
_AUTO_RULES: dict[str, tuple[int, tuple[str, ...]]] = {
    "focus_automatic_continuous": (0, ("focus_absolute", "focus_relative")),
    "focus_auto": (0, ("focus_absolute", "focus_relative")),
    "auto_exposure": (1, ("exposure_time_absolute",)),
    "exposure_auto": (1, ("exposure_absolute",)),
    "white_balance_automatic": (0, ("white_balance_temperature",)),
    "white_balance_temperature_auto": (0, ("white_balance_temperature",)),
}


class RecordedControls:
    """A control table recorded from a real device, behaving like its driver.

    Values are checked as the V4L2 core does (EINVAL outside min..max or for a menu index the menu
    lacks; integers rounded to the step), inactive controls refuse writes with EACCES as uvcvideo does,
    and setting an auto control (autofocus, auto exposure, auto white balance) flips the "inactive"
    flag of the controls it governs.  `writes` records every accepted write, in order.
    """

    def __init__(self, table: Mapping[str, ControlInfo], *, model: str = "", source: str = "") -> None:
        self._table = dict(table)
        self.model = model
        self.source = source
        self.writes: list[tuple[str, int]] = []
        self.modes: list[dict[str, Any]] = []  # the formats the dump listed (VIDIOC_ENUM_FMT), if any
        for name, info in list(self._table.items()):
            self._apply_rule(name, info.value)

    @classmethod
    def load(cls, path: str | Path, *, model: str = "") -> RecordedControls:
        """A table from a file holding `v4l2-ctl --list-ctrls-menus` (or `--all`) output."""
        table, modes = parse_v4l2_ctl(Path(path).read_text())
        rec = cls(table, model=model, source=str(path))
        rec.modes = modes
        return rec

    def controls(self) -> dict[str, ControlInfo]:
        return dict(self._table)

    def set(self, name: str, value: int) -> None:
        info = self._table.get(name)
        if info is None:
            raise OSError(errno.EINVAL, f"no control {name!r}")
        if info.inactive:
            raise OSError(errno.EACCES, f"{name} is inactive")
        if not info.minimum <= value <= info.maximum or (info.menu and value not in info.menu):
            raise OSError(errno.EINVAL, f"{name}={value} outside {info.minimum}..{info.maximum}")
        if info.type == "int" and info.step > 1:
            value = info.minimum + round((value - info.minimum) / info.step) * info.step
        self._table[name] = replace(info, value=value)
        self._apply_rule(name, value)
        self.writes.append((name, value))

    def _apply_rule(self, name: str, value: int) -> None:
        rule = _AUTO_RULES.get(name)
        if rule is None:
            return
        manual, governed = rule
        for g in governed:
            if g in self._table:
                self._table[g] = replace(self._table[g], inactive=value != manual)

    def close(self) -> None:
        return None


class V4L2Controls:
    """The controls of a real V4L2 device, through `linuxpy` (opened beside FFmpeg's capture handle:
    V4L2 lets several file handles of one device read and write controls)."""

    def __init__(self, path: str) -> None:
        from linuxpy.video.device import Device  # imported here: only cameras with V4L2 controls need it

        self.path = path
        self._device: Any = Device(path)
        try:
            self._device.open()
        except OSError as e:
            raise ControlFailedError(f"cannot open {path} to read its controls ({e.strerror or e}); is the camera "
                                     "still there, and may this user open it (the `video` group)?") from e

    def controls(self) -> dict[str, ControlInfo]:
        out: dict[str, ControlInfo] = {}
        try:
            found = list(self._device.controls.values())
        except OSError as e:
            raise ControlFailedError(f"cannot list the controls of {self.path} ({e.strerror or e})") from e
        for ctrl in found:
            kind = ctrl.type.name.lower().replace("integer_menu", "intmenu").replace("integer", "int").replace(
                "boolean", "bool")
            if kind not in ("int", "bool", "menu", "intmenu"):
                continue
            try:
                value, default = int(ctrl.value), int(ctrl.default)
            except (OSError, TypeError, ValueError):  # a write-only or failing control: listed without a value
                value = default = 0
            menu = {int(k): str(v) for k, v in dict(ctrl).items()} if kind in ("menu", "intmenu") else {}
            out[ctrl.config_name] = ControlInfo(ctrl.config_name, kind, int(ctrl.minimum), int(ctrl.maximum),
                                                int(ctrl.step), default, value, bool(ctrl.is_flagged_inactive), menu)
        return out

    @property
    def modes(self) -> list[dict[str, Any]]:
        """The capture modes the driver lists (VIDIOC_ENUM_FMT / FRAMESIZES / FRAMEINTERVALS), like
        `v4l2-ctl --list-formats-ext`: [{"format", "width", "height", "fps": [...]}]; [] if it lists none."""
        try:
            types = list(self._device.info.frame_types)
        except (OSError, AttributeError, ValueError):
            return []
        modes: dict[tuple[str, int, int], list[float]] = {}
        for t in types:
            fmt = getattr(t.pixel_format, "name", str(t.pixel_format))
            rates = modes.setdefault((fmt, int(t.width), int(t.height)), [])
            for fps in {float(t.max_fps), float(t.min_fps)}:
                if fps > 0 and fps not in rates:
                    rates.append(fps)
        return [{"format": f, "width": w, "height": h, "fps": sorted(r, reverse=True)}
                for (f, w, h), r in modes.items()]

    def set(self, name: str, value: int) -> None:
        ctrl = self._device.controls[name]
        try:
            ctrl.value = value
        except AttributeError as e:  # linuxpy refuses read-only/inactive/grabbed controls before the ioctl
            raise OSError(errno.EACCES, str(e)) from e

    def close(self) -> None:
        self._device.close()


_CTRL_LINE = re.compile(r"^\s*(\w+) 0x[0-9a-f]+ \((\w+)\)\s*:(.*)$")
_MENU_LINE = re.compile(r"^\t+\s*(-?\d+): (.*)$")
_FMT_LINE = re.compile(r"^\s*\[\d+\]: '(\w+)'")
_SIZE_LINE = re.compile(r"^\s*Size: Discrete (\d+)x(\d+)")
_RATE_LINE = re.compile(r"^\s*Interval: Discrete [\d.]+s \(([\d.]+) fps\)")


def parse_v4l2_ctl(text: str) -> tuple[dict[str, ControlInfo], list[dict[str, Any]]]:
    """The controls (and, where listed, the capture modes) in `v4l2-ctl --list-ctrls-menus` /
    `--list-formats-ext` output: ({name: ControlInfo}, [{"format", "width", "height", "fps": [...]}])."""
    table: dict[str, ControlInfo] = {}
    modes: list[dict[str, Any]] = []
    last: str | None = None
    fmt = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if m := _CTRL_LINE.match(line):
            name, kind, rest = m.group(1), m.group(2), m.group(3)
            fields = dict(re.findall(r"(\w+)=(-?\w+)", rest))
            top = 1 if kind == "bool" else 0
            table[name] = ControlInfo(name, kind, int(fields.get("min", 0)), int(fields.get("max", top)),
                                      int(fields.get("step", 1)), int(fields.get("default", 0)),
                                      int(fields.get("value", 0)), "inactive" in fields.get("flags", ""))
            last = name
        elif (m := _MENU_LINE.match(line)) and last is not None and table[last].type in ("menu", "intmenu"):
            info = table[last]
            table[last] = replace(info, menu={**info.menu, int(m.group(1)): m.group(2).strip()})
        elif m := _FMT_LINE.match(line):
            fmt, last = m.group(1), None
        elif m := _SIZE_LINE.match(line):
            modes.append({"format": fmt, "width": int(m.group(1)), "height": int(m.group(2)), "fps": []})
        elif (m := _RATE_LINE.match(line)) and modes:
            modes[-1]["fps"].append(float(m.group(1)))
    return table, modes


# ---- mappings (pure) ------------------------------------------------------------------------------

def scale_percent(info: ControlInfo, percent: float) -> int:
    """0..100 onto the control's min..max, snapped to its step."""
    step = max(info.step, 1)
    raw = info.minimum + (info.maximum - info.minimum) * min(max(percent, 0.0), 100.0) / 100.0
    return min(info.maximum, info.minimum + round((raw - info.minimum) / step) * step)


def scale_signed(info: ControlInfo, amount: float) -> int:
    """-100..100 around the control's default: -100 -> min, 0 -> default, 100 -> max (snapped to the step)."""
    a = min(max(amount, -100.0), 100.0) / 100.0
    span = (info.maximum - info.default) if a >= 0 else (info.default - info.minimum)
    raw = info.default + span * a
    step = max(info.step, 1)
    return min(info.maximum, max(info.minimum, info.minimum + round((raw - info.minimum) / step) * step))


def zoom_value(info: ControlInfo, factor: float) -> int:
    """A zoom factor 1..MAX_ZOOM onto `zoom_absolute`'s min..max."""
    return scale_percent(info, (factor - 1.0) / (MAX_ZOOM - 1.0) * 100.0)


class CameraControls:
    """The engine's camera options over a controls backend (see the module's table)."""

    def __init__(self, backend: ControlsBackend, device: str = "") -> None:
        self.backend = backend
        self.device = device

    def _first(self, names: tuple[str, ...]) -> ControlInfo | None:
        table = self.backend.controls()
        return next((table[n] for n in names if n in table), None)

    def _unsupported(self, what: str, wanted: str) -> ControlUnsupportedError:
        where = self.device or "this device"
        if not self.backend.controls():
            return ControlUnsupportedError(f"{where} has no camera controls ({what} needs V4L2 {wanted}); only the "
                                           "digital `zoom` applies to it")
        return ControlUnsupportedError(f"{where} has no {wanted} control, so {what} is not available; "
                                       "`capabilities` lists what it has")

    def _write(self, info: ControlInfo, value: int, what: str) -> int:
        try:
            self.backend.set(info.name, value)
        except OSError as e:
            why = "inactive under another setting" if e.errno == errno.EACCES else (e.strerror or str(e))
            raise ControlFailedError(f"{self.device or 'the device'} refused {info.name}={value} for {what} "
                                     f"({why}); `capabilities` shows its range and state") from e
        return value

    def capabilities(self) -> dict[str, Any]:
        """What each option does on this device, and the raw table (v4l2-ctl names)."""
        table = self.backend.controls()
        has = {k: any(n in table for n in names) for k, names in (
            ("autofocus", AUTOFOCUS_CONTROLS), ("focus", (FOCUS_CONTROL,)), ("torch", TORCH_CONTROLS),
            ("exposure_compensation", EXPOSURE_CONTROLS))}
        return {**has, "zoom": self.zoom_mode(), "max_zoom": MAX_ZOOM,
                "controls": [info.as_dict() for info in table.values()]}

    def zoom_mode(self) -> str:
        return "optical" if ZOOM_CONTROL in self.backend.controls() else "digital"

    def set_autofocus(self, on: bool) -> dict[str, int]:
        info = self._first(AUTOFOCUS_CONTROLS)
        if info is None:
            raise self._unsupported("autofocus", "focus_automatic_continuous")
        return {info.name: self._write(info, int(on), "autofocus")}

    def set_focus(self, percent: float) -> dict[str, int]:
        """Manual focus: autofocus off first (the driver keeps focus_absolute inactive while it is on)."""
        info = self._first((FOCUS_CONTROL,))
        if info is None:
            raise self._unsupported("manual focus", FOCUS_CONTROL)
        done: dict[str, int] = {}
        auto = self._first(AUTOFOCUS_CONTROLS)
        if auto is not None and auto.value != 0:
            done[auto.name] = self._write(auto, 0, "manual focus")
        info = self._first((FOCUS_CONTROL,)) or info  # its flags after autofocus went off
        done[info.name] = self._write(info, scale_percent(info, percent), "focus")
        return done

    def set_optical_zoom(self, factor: float) -> dict[str, int]:
        info = self._first((ZOOM_CONTROL,))
        if info is None:
            raise self._unsupported("optical zoom", ZOOM_CONTROL)
        return {info.name: self._write(info, zoom_value(info, factor), "zoom")}

    def set_torch(self, on: bool) -> dict[str, int]:
        info = self._first(TORCH_CONTROLS)
        if info is None:
            raise NoTorchError(f"{self.device or 'this device'} has no light control (V4L2 flash led_mode or "
                               "torch_intensity), so `torch` is not available; most webcams have none")
        if info.name == "led_mode":
            value = FLASH_LED_MODE_TORCH if on else FLASH_LED_MODE_OFF
        else:
            value = info.maximum if on else info.minimum
        return {info.name: self._write(info, value, "torch")}

    def set_exposure_compensation(self, amount: float) -> dict[str, int]:
        info = self._first(EXPOSURE_CONTROLS)
        if info is None:
            raise self._unsupported("exposure compensation", "auto_exposure_bias or brightness")
        return {info.name: self._write(info, scale_signed(info, amount), "exposure compensation")}

    def close(self) -> None:
        self.backend.close()
