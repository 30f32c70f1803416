"""Recorder: muxes encoded H.264 and/or AAC packets into a file that stays playable after a crash.

```yaml
- {id: rec, kind: recorder, inputs: {video: venc, audio: aenc}, options: {path: out/demo.mp4}}
```

- Containers, by `format` or else by the file extension: `.mp4`/`.m4a` -> fragmented MP4
  (`frag_keyframe+empty_moov+delay_moov+default_base_moof`, a fragment at least every
  `fragment_s`; the moov is written with the first fragment), `.flv` ->
  FLV, `.ts` -> MPEG-TS, `.m3u8` -> an HLS playlist with `<name>_NNNNN.ts` segments beside it.  All
  of them are written progressively and flushed as they go, straight to the final path (no temp file
  and rename), so a SIGKILLed engine leaves a playable file that lacks at most the last fragment.
- The file is created once every linked input has sent its stream `params` (from a keyframe
  packet).  Until then packets are buffered (video from its first keyframe; audio that ends before that
  keyframe is dropped).  An input that sends no params while the others have buffered
  `start_timeout_s` of media is left out of the file (event `input_missing`; its packets are counted
  as dropped).
- The file's timeline starts at 0: the earliest buffered timestamp is subtracted from every packet.
  Gaps in the input timeline (an upstream restart) stay gaps.  Interleaving is FFmpeg's
  (`av_interleaved_write_frame`, at most `max_interleave_delta` = 1 s of holding back).  Per stream
  the dts must strictly increase: an offending packet is dropped and counted (`dropped_non_monotonic`)
  and video then waits for the next keyframe.
- Which file: the first writer of an engine run (`restart_count == 0`) writes `path`, overwriting
  it when `overwrite` is true.  Any later writer (a restarted recorder, or a new file after all
  inputs ended and packets came again) never replaces a file: it writes the first free name among
  `name.1.ext`, `name.2.ext`, ...  The `recording_started` event names the file.
- Stream parameter changes mid-recording (a new SPS/PPS after the encoder reopened at a new size) are
  reported (`stream_params_changed`) and applied in-band: from then on every video keyframe is muxed
  with the new SPS/PPS (Annex B) in front, so decoders switch size at that keyframe (the container's
  header keeps the first size, as a live FLV's onMetaData does).
"""

from __future__ import annotations

import errno
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.container
import av.stream
from mediaengine.sdk.actor import Action, Actions, Actor, Context, Event, InPort, option
from mediaengine.sdk.codec import add_stream_from_params, packet_to_av, time_base_of
from mediaengine.sdk.errors import DiskFullError, FileError, FormatError, OptionError, ResourceError
from mediaengine.sdk.formats import Format, Frame, Packet

EXTENSIONS = {".mp4": "mp4", ".m4a": "mp4", ".flv": "flv", ".ts": "mpegts", ".m3u8": "hls"}
FORMATS = ("mp4", "flv", "mpegts", "hls")
MAX_BUFFERED = 4096  # packets per input while waiting for stream params
PARAM_KEYS = ("codec", "extradata", "width", "height", "rate", "channels")


@dataclass(frozen=True)
class RecorderOptions:
    path: str = option(doc="output file, e.g. out/demo.mp4; parent folders are created")
    format: str = option("", choices=("", *FORMATS),
                         doc='mp4 | flv | mpegts | hls; "" = from the extension (.mp4 .m4a .flv .ts .m3u8)')
    fragment_s: float = option(1.0, doc="MP4: longest fragment (the most a crash loses); HLS: segment length")
    overwrite: bool = option(True, doc="the first writer of an engine run overwrites `path` (restarts never do)")
    start_timeout_s: float = option(
        10.0, doc="start without an input that sent no params within this much media")


def container_format(options: RecorderOptions) -> str:
    """The muxer to use, from `format` or the path's extension; OptionError when neither says."""
    if options.format:
        if options.format not in FORMATS:
            raise OptionError(f"format {options.format!r} is not one of {', '.join(FORMATS)}")
        return options.format
    ext = Path(options.path).suffix.lower()
    if ext not in EXTENSIONS:
        raise OptionError(f"cannot tell the container from {options.path!r}: use one of "
                          f"{', '.join(EXTENSIONS)} or set `format`")
    return EXTENSIONS[ext]


def container_options(fmt: str, path: Path, fragment_s: float) -> dict[str, str]:
    """Muxer options that keep the file playable at any moment."""
    opts = {"flush_packets": "1", "max_interleave_delta": "1000000"}
    if fmt == "mp4":
        # delay_moov: the moov goes out with the first fragment, when every track's start is known,
        # so its edit lists keep a late-starting track in sync (without it each track starts at 0).
        opts["movflags"] = "frag_keyframe+empty_moov+delay_moov+default_base_moof"
        opts["frag_duration"] = str(max(1, round(fragment_s * 1_000_000)))
    elif fmt == "hls":
        opts.update({
            "hls_time": f"{fragment_s:g}",
            "hls_list_size": "0",
            "hls_playlist_type": "event",
            "hls_segment_filename": str(path.with_name(f"{path.stem}_%05d.ts")),
        })
    return opts


def _write_error(what: str, e: BaseException, node: str | None) -> ResourceError:
    """A write failure as a ResourceError; a full disk is told apart (DiskFullError) with its fix."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{what}: no space left on the device ({e}); free space or set `path` to "
                             "another filesystem", where=node or None)
    return ResourceError(f"{what}: {e}", where=node or None)


def numbered_path(path: Path, n: int) -> Path:
    """`out/demo.mp4` -> `out/demo.<n>.mp4`."""
    return path.with_name(f"{path.stem}.{n}{path.suffix}")


def choose_path(path: Path, *, may_overwrite: bool) -> Path:
    """`path` itself if allowed (or free), else the first free `name.N.ext`."""
    if may_overwrite or not path.exists():
        return path
    n = 1
    while numbered_path(path, n).exists():
        n += 1
    return numbered_path(path, n)


def rescale(value: int, src: Fraction, dst: Fraction) -> int:
    """`value` from time base `src` to `dst`, rounding half away from zero (like av_rescale_q)."""
    x = value * src / dst
    return math.floor(x + Fraction(1, 2)) if x >= 0 else -math.floor(-x + Fraction(1, 2))


def packet_time(p: Packet, ts: int | None = None) -> Fraction:
    return (p.pts if ts is None else ts) * p.time_base


@dataclass
class _Track:
    pad: str
    params: dict[str, Any] | None = None
    stream: av.stream.Stream | None = None
    buffer: deque[Packet] = field(default_factory=lambda: deque(maxlen=MAX_BUFFERED))
    missing: bool = False  # left out of the file (no params in time)
    need_key: bool = False  # video: wait for a keyframe before muxing again
    last_dts: int | None = None  # in the output stream's time base
    end: Fraction = Fraction(0)  # end of the last muxed packet, seconds on the file timeline
    ended: bool = False  # on_eos seen
    inband: bytes = b""  # SPS/PPS put in front of each keyframe after a mid-recording params change
    muxed: int = 0

    @property
    def is_video(self) -> bool:
        return self.pad == "video"

    def frame_duration(self) -> Fraction:
        p = self.params or {}
        if self.is_video:
            fps = float(p.get("fps") or 0)
            return Fraction(1) / Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(0)
        rate = int(p.get("rate") or 0)
        return Fraction(1024, rate) if rate > 0 else Fraction(0)


class Recorder(Actor[RecorderOptions]):
    inputs = {
        "video": InPort("encoded", codecs=("h264",), policy="block", required=False),
        "audio": InPort("encoded", codecs=("aac",), policy="block", required=False),
    }
    outputs = {}
    Options = RecorderOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        check_options(options, input_formats)

    def setup(self, ctx: Context) -> None:
        self.node_id = ctx.node_id
        self.restart_count = ctx.restart_count  # 0 on the first start of this node in the engine run
        self.fmt = container_format(self.options)
        self._tracks = {pad: _Track(pad) for pad in self.inputs if pad in ctx.input_formats}
        self._container: av.container.OutputContainer | None = None
        self._files = 0  # files written by this process
        self._t0 = Fraction(0)  # input time that becomes 0 in the file
        self._offsets: dict[Fraction, int] = {}  # packet time base -> offset in its ticks
        self.path: Path | None = None  # the file being written
        self.packets_muxed = 0
        self.dropped_waiting = 0  # dropped before the file started (no keyframe yet, buffer full)
        self.dropped_non_monotonic = 0
        self.dropped_missing_input = 0
        self.params_changes = 0

    # ---- starting a file ---------------------------------------------------------------------
    def _ready(self) -> bool:
        tracks = list(self._tracks.values())
        if all(t.params is not None for t in tracks):
            return True
        if not any(t.params is not None for t in tracks):
            return False
        spans = [packet_time(t.buffer[-1]) - packet_time(t.buffer[0]) for t in tracks if t.buffer]
        return max(spans, default=Fraction(0)) >= Fraction(self.options.start_timeout_s)

    def _open(self) -> list[Action]:
        may_overwrite = self.restart_count == 0 and self._files == 0 and self.options.overwrite
        path = choose_path(Path(self.options.path), may_overwrite=may_overwrite)
        actions: list[Action] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            copts = container_options(self.fmt, path, self.options.fragment_s)
            container = av.open(str(path), "w", format=self.fmt, container_options=copts)
        except (OSError, av.FFmpegError) as e:
            raise FileError(f"cannot create {path}: {e}", where=self.node_id or None) from e
        try:
            for t in self._tracks.values():
                if t.params is None:
                    t.missing = True
                    self.dropped_missing_input += len(t.buffer)
                    t.buffer.clear()
                    actions.append(Event("input_missing", {"pad": t.pad, "path": str(path)}))
                else:
                    t.stream = add_stream_from_params(container, t.params)
            container.start_encoding()  # header now: the file is valid from here on
        except (OSError, av.FFmpegError, ValueError) as e:
            container.close()
            raise _write_error(f"cannot start {self.fmt} file {path}", e, self.node_id) from e
        self._container = container
        self._files += 1
        self.path = path
        self._start_timeline()
        actions.append(Event("recording_started", {
            "path": str(path), "format": self.fmt, "restart_count": self.restart_count,
            "streams": [t.pad for t in self._tracks.values() if t.stream is not None]}))
        backlog = sorted(((packet_time(p, p.dts), pad, p) for pad, t in self._tracks.items()
                          for p in t.buffer), key=lambda x: x[0])
        for t in self._tracks.values():
            t.buffer.clear()
        for _, pad, p in backlog:
            self._mux(self._tracks[pad], p)
        return actions

    def _start_timeline(self) -> None:
        """Trim the buffers (video from a keyframe, no audio before it) and pick time zero."""
        video = self._tracks.get("video")
        if video is not None and video.stream is not None:
            while video.buffer and not video.buffer[0].keyframe:
                video.buffer.popleft()
                self.dropped_waiting += 1
            if video.buffer:
                start = packet_time(video.buffer[0], video.buffer[0].dts)
                audio = self._tracks.get("audio")
                while (audio is not None and audio.buffer
                       and packet_time(audio.buffer[0]) + audio.frame_duration() < start):
                    audio.buffer.popleft()
                    self.dropped_waiting += 1
        firsts = [packet_time(t.buffer[0], t.buffer[0].dts) for t in self._tracks.values() if t.buffer]
        self._t0 = min(firsts, default=Fraction(0))
        self._offsets.clear()

    def _offset(self, tb: Fraction) -> int:
        off = self._offsets.get(tb)
        if off is None:
            off = self._offsets[tb] = math.floor(self._t0 / tb)
        return off

    # ---- muxing ------------------------------------------------------------------------------
    def _mux(self, t: _Track, p: Packet) -> None:
        assert self._container is not None
        if t.stream is None:
            self.dropped_missing_input += 1
            return
        if t.need_key:
            if not p.keyframe:
                self.dropped_non_monotonic += 1
                return
            t.need_key = False
        off = self._offset(p.time_base)
        stb = t.stream.time_base
        assert stb is not None
        dts = rescale(p.dts - off, p.time_base, stb)
        if dts < 0 or (t.last_dts is not None and dts <= t.last_dts):
            self.dropped_non_monotonic += 1
            t.need_key = t.is_video
            return
        if t.inband and p.keyframe:
            p = p.replace(data=t.inband + p.data)
        try:
            self._container.mux(packet_to_av(p, t.stream, offset=off))
        except (OSError, av.FFmpegError) as e:
            raise _write_error(f"writing {self.path} failed", e, self.node_id) from e
        t.last_dts = dts
        t.muxed += 1
        self.packets_muxed += 1
        t.end = max(t.end, (p.pts - off) * p.time_base + t.frame_duration())

    def _note_params(self, t: _Track, params: dict[str, Any]) -> list[Action]:
        """Record a track's stream params; a change mid-recording is reported (the returned event)."""
        if t.params is None:
            time_base_of(params)  # validates
            t.params = params
            return []
        if not any(t.params.get(k) != params.get(k) for k in PARAM_KEYS):
            return []
        self.params_changes += 1
        extradata = params.get("extradata")
        inband = t.is_video and self._container is not None and isinstance(extradata, bytes) and extradata
        event = Event("stream_params_changed", {
            "pad": t.pad, "path": str(self.path) if self.path else None,
            "width": params.get("width"), "height": params.get("height"),
            "note": "new SPS/PPS in-band" if inband else "not applied to the file"})
        if self._container is None:
            t.params = params
        elif inband:
            assert isinstance(extradata, bytes)
            t.params, t.inband = params, extradata  # compare later keyframes with the new params
        return [event]

    # ---- hooks -------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        t = self._tracks.get(pad)
        if t is None:
            raise FormatError(f"recorder got media on unlinked pad {pad!r}")
        if not isinstance(media, Packet):
            raise FormatError(f"recorder takes encoded packets on {pad!r}, got a raw frame")
        actions = self._note_params(t, media.params) if media.params else []
        if self._container is not None:
            self._mux(t, media)
            return actions
        if t.is_video and not t.buffer and not media.keyframe:
            self.dropped_waiting += 1
            return actions
        if len(t.buffer) == t.buffer.maxlen:
            self.dropped_waiting += 1
        t.buffer.append(media)
        if self._ready():
            actions.extend(self._open())
        return actions

    def metrics(self) -> dict[str, Any]:
        """Counters the runtime publishes with its own metrics."""
        return {"path": str(self.path) if self.path else None, "recording": self._container is not None,
                "packets_muxed": self.packets_muxed, "dropped_waiting": self.dropped_waiting,
                "dropped_non_monotonic": self.dropped_non_monotonic,
                "dropped_missing_input": self.dropped_missing_input, "params_changes": self.params_changes}

    def on_eos(self, pad: str) -> Actions:
        t = self._tracks.get(pad)
        if t is not None:
            t.ended = True
        if all(t.ended for t in self._tracks.values()):
            return self._finish()
        return None

    def stop(self) -> Actions:
        return self._finish()

    def _finish(self) -> list[Action]:
        """Write the trailer and close; the next packet (if any) starts a new file."""
        actions: list[Action] = []
        container, self._container = self._container, None
        if container is None:
            if self._files == 0:
                actions.append(Event("recording_finished", {
                    "path": None, "duration_s": 0.0, "packets": 0,
                    "note": "no stream params arrived: no file written"}))
            return actions
        try:
            container.close()
        except (OSError, av.FFmpegError) as e:
            raise _write_error(f"finishing {self.path} failed", e, self.node_id) from e
        duration = max((t.end for t in self._tracks.values()), default=Fraction(0))
        actions.append(Event("recording_finished", {
            "path": str(self.path), "duration_s": round(float(duration), 3),
            "packets": self.packets_muxed, "dropped_non_monotonic": self.dropped_non_monotonic}))
        # a later file starts from scratch
        self._tracks = {pad: _Track(pad, ended=t.ended) for pad, t in self._tracks.items()}
        return actions


def check_options(options: RecorderOptions, input_formats: Mapping[str, Format]) -> None:
    """Load-time checks: a known container, positive durations, at least one linked input."""
    if not options.path:
        raise OptionError("path must not be empty")
    container_format(options)
    if options.fragment_s <= 0 or options.start_timeout_s <= 0:
        raise OptionError("fragment_s and start_timeout_s must be > 0")
    if not any(pad in input_formats for pad in Recorder.inputs):
        raise OptionError("recorder needs at least one linked input: video and/or audio")
