"""Media pushed from another process into an `external_source` node: the wire, the checks, the PCM path.

The caller (`Engine.push_video` / `push_audio`, in the user's process) and the `external_source`
actor share this module, so the caller gets the same typed error the node would raise, before
anything is sent, and the engine is never touched by a malformed array.

Transport (docs/capture.md, "External frames"): the node binds one ZeroMQ PULL socket per media
kind in the engine's private (0700) runtime directory (`ingress_endpoint`); the caller connects a
PUSH socket to it and sends each picture or PCM chunk as one two-part message: a small msgpack
header (`pack_header`) and the raw bytes of the array.  A message arrives whole or not at all, so a
caller that dies mid-push cannot leave half a frame behind, and the node converts straight from the
received buffer into its output ring slot (one conversion, no extra copy).  High-water marks on both
sockets bound what is queued; the node's `policy` decides what a caller faster than real time gets:
`block` (its send waits, up to a timeout), `drop_newest` or `drop_oldest` (frames dropped and
counted in the node's metrics).

Arrays: pictures in any of `pixels.PUSH_PIX_FMTS` at the node's size; PCM as (samples, channels)
(or (samples,) for mono) int16 (`s16`) or float32 (`flt`, -1..1) at any rate from 8 kHz to 192 kHz
and 1..8 channels, resampled to the node's rate and channels by `PcmConverter` (FFmpeg's
swresample through `av.AudioResampler`, which keeps the waveform continuous across chunks).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import av
import msgpack
import numpy as np
import numpy.typing as npt

from .errors import FormatError, PushAudioError, PushDtypeError, PushPixelFormatError, PushShapeError

__all__ = ["HEADER_VERSION", "MAX_PUSH_CHANNELS", "SAMPLE_FMTS", "Header", "PcmConverter", "check_audio",
           "ingress_endpoint", "pack_header", "unpack_header"]

HEADER_VERSION = 1
#: dtype of each accepted sample format
SAMPLE_FMTS: dict[str, np.dtype[Any]] = {"s16": np.dtype(np.int16), "flt": np.dtype(np.float32)}
MAX_PUSH_CHANNELS = 8
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}
_MAX_HEADER = 512


def ingress_endpoint(runtime_dir: str, node: str, media: str) -> str:
    """The `ipc://` endpoint where node `node` takes pushed `media` ("video" or "audio")."""
    return f"ipc://{os.path.join(runtime_dir, f'push-{node}-{media}.sock')}"


@dataclass(frozen=True)
class Header:
    """What travels before a pushed array's bytes."""

    fmt: str  # pixel format (video) or sample format (audio)
    shape: tuple[int, ...]
    pts_ns: int | None = None  # video: the caller's time of the picture; None: the node's arrival time
    rate: int = 0  # audio: sample rate of the chunk
    dropped: int = 0  # frames the caller's side dropped so far (non-blocking policies), for the node's metrics


def pack_header(h: Header) -> bytes:
    return bytes(msgpack.packb({"v": HEADER_VERSION, "fmt": h.fmt, "shape": list(h.shape), "pts_ns": h.pts_ns,
                                "rate": h.rate, "dropped": h.dropped}))


def unpack_header(raw: bytes) -> Header:
    """Decode a header; anything malformed is a FormatError (the node counts it and goes on)."""
    if len(raw) > _MAX_HEADER:
        raise FormatError(f"pushed header of {len(raw)} bytes (at most {_MAX_HEADER})")
    try:
        d = msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException) as e:
        raise FormatError(f"pushed header does not decode: {e}") from None
    if not isinstance(d, dict) or d.get("v") != HEADER_VERSION:
        raise FormatError(f"pushed header is not a version {HEADER_VERSION} map")
    fmt, shape, pts = d.get("fmt"), d.get("shape"), d.get("pts_ns")
    rate, dropped = d.get("rate", 0), d.get("dropped", 0)
    if (not isinstance(fmt, str) or not isinstance(shape, list) or len(shape) > 3
            or not all(isinstance(x, int) and 0 < x < 1 << 20 for x in shape)
            or not (pts is None or isinstance(pts, int)) or not isinstance(rate, int)
            or not isinstance(dropped, int)):
        raise FormatError("pushed header has a field of the wrong type")
    return Header(fmt, tuple(shape), pts, rate, dropped)


# ---- audio ----------------------------------------------------------------------------------------

def check_audio(array: Any, sample_rate: int, sample_fmt: str | None = None, *,
                node: str = "") -> tuple[npt.NDArray[Any], str]:
    """`array` as C-contiguous (samples, channels) PCM and its sample format, or a typed error.

    The format is `sample_fmt` if given, else the dtype's (int16 `s16`, float32 `flt`).
    PushPixelFormatError (1214) for an unknown format, PushDtypeError (1213) for a dtype that is not
    the format's, PushShapeError (1212) for no samples or more than 2 dimensions, PushAudioError
    (1215) for a rate outside 8000..192000 or a channel count outside 1..8.
    """
    where = f"push_audio to {node!r}" if node else "push_audio"
    if not isinstance(array, np.ndarray):
        raise PushDtypeError(f"{where}: expected a numpy array, got {type(array).__name__}")
    if sample_fmt is None:
        sample_fmt = next((k for k, dt in SAMPLE_FMTS.items() if array.dtype == dt), "")
        if not sample_fmt:
            raise PushDtypeError(f"{where}: PCM is int16 (s16) or float32 (flt, -1..1), got {array.dtype}; "
                                 "convert with a.astype(np.float32) or np.int16")
    if sample_fmt not in SAMPLE_FMTS:
        raise PushPixelFormatError(f"{where}: sample format {sample_fmt!r} is not one the engine takes; use s16 or flt")
    if array.dtype != SAMPLE_FMTS[sample_fmt]:
        raise PushDtypeError(f"{where}: {sample_fmt} PCM is {SAMPLE_FMTS[sample_fmt]}, got {array.dtype}")
    if array.ndim == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[0] < 1:
        raise PushShapeError(f"{where}: PCM has shape (samples, channels) or (samples,), with at least one "
                             f"sample; got {array.shape}")
    if not 1 <= array.shape[1] <= MAX_PUSH_CHANNELS:
        raise PushAudioError(f"{where}: {array.shape[1]} channels (shape {array.shape}); 1..{MAX_PUSH_CHANNELS} "
                             "are accepted: is the array transposed? use (samples, channels)")
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or not 8000 <= sample_rate <= 192000:
        raise PushAudioError(f"{where}: sample rate {sample_rate!r} is out of range (an int in 8000..192000)")
    return np.ascontiguousarray(array), sample_fmt


class PcmConverter:
    """Pushed PCM of any rate, channel count and sample format to the node's s16 (samples, channels).

    One FFmpeg resampler per input layout; a chunk in another rate, channel count or format starts a
    new one (the old one's few buffered samples are flushed first, so nothing is lost).
    """

    def __init__(self, rate: int, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._key: tuple[str, int, int] | None = None
        self._resampler: av.AudioResampler | None = None

    def convert(self, pcm: npt.NDArray[Any], sample_fmt: str, rate: int) -> npt.NDArray[np.int16]:
        """`pcm` (checked by `check_audio`) as s16 (n, channels) at the node's rate; n may be 0."""
        key = (sample_fmt, pcm.shape[1], rate)
        out: list[npt.NDArray[np.int16]] = []
        if key != self._key:
            if self._resampler is not None:
                out += [self._samples(f) for f in self._resampler.resample(None)]
            self._resampler = av.AudioResampler(format="s16", layout=_LAYOUTS[self.channels], rate=self.rate)
            self._key = key
        assert self._resampler is not None
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format=sample_fmt, layout=_LAYOUTS[pcm.shape[1]])
        frame.sample_rate = rate
        out += [self._samples(f) for f in self._resampler.resample(frame)]
        if not out:
            return np.zeros((0, self.channels), np.int16)
        return out[0] if len(out) == 1 else np.concatenate(out)

    def _samples(self, frame: av.AudioFrame) -> npt.NDArray[np.int16]:
        return np.ascontiguousarray(frame.to_ndarray().reshape(-1, self.channels), dtype=np.int16)
