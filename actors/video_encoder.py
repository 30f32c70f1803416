"""H.264 video encoder (libx264 through PyAV): raw yuv420p or rgb24 frames in, Annex B packets out.

```yaml
- {id: venc, kind: video_encoder, inputs: {in: cam}, options: {bitrate_kbps: 1500, gop_s: 2}}
```

- Colour: a yuv420p (I420) input is what x264 takes, so it is only copied into the encoder's buffer
  (kept for keepalive), never converted; the loader gives the edge yuv420p when the producer can
  emit it (a camera, screen or file source feeding the encoder directly).  An rgb24 input (after an
  RGB filter) is converted rgb24 -> yuv420p with OpenCV (`COLOR_RGB2YUV_I420`, BT.601 limited range, tagged so) into
  one preallocated buffer that PyAV wraps without copying (`VideoFrame.from_numpy_buffer`); libx264
  copies the picture in during `encode`, so the buffer is reused for the next frame.
- Rate control: average bit rate with VBV (`maxrate` = `bufsize`/`vbv_buffer_s` = the bit rate at
  open), which is what lets `bitrate_kbps` change live.  Lowering it retargets x264 in place at once;
  the VBV buffer keeps the size it was opened with, though, so at a third of that rate it holds three
  seconds, and after a stretch of easy pictures x264 spends it in one burst (measured: 1.3-1.5 Mbit/s
  for a second at a 516-717 kbit/s target).  So the encoder reopens at its target at the next
  keyframe it makes anyway (x264's GOP, `keyframe`, `keyframe_request`), whenever the target is more
  than `RESYNC_SHARE` under the rate it opened with: a fresh rate control and a buffer of
  `vbv_buffer_s` of the new rate, at no extra IDR (bursts then stayed within 1.25x the target).
  x264 cannot raise its VBV cap in place, so a raise above the rate it opened with waits for that
  keyframe too (at most `gop_s`); before, it reopened at once, one more IDR burst per raise.  A raise
  to more than `RAISE_AT_ONCE` (1.2x) that rate still reopens at once: a rate controller recovering
  after the link came back raises the bit rate by 1.1-2x at each probe, on a link that just proved
  the room; the small raises that wait are those near a steady link's rate.  A
  reopened x264 starts with its VBV buffer 30% full (`REOPEN_VBV_INIT`), not x264's 90%: else its
  first frames spend almost a whole buffer at once, a burst the sender's rate controller reads as
  congestion.  Hardware encoders cannot retarget at all: they reopen at once.
- Timestamps: packets are in a 1/90000 time base on the engine timeline (`Frame.pts_ns` rounded), so
  audio and video packets from different processes line up.  Output pts strictly increase: a frame
  whose pts is not after the last encoded one is dropped (counted in `dropped_frames`), e.g. a
  frame that keepalive repeats already covered.
- Keepalive: when no frame arrived for `keepalive_ms` of tick time, the last picture is encoded
  again, one repeat per frame interval with pts = previous + 1 interval, so the stream stays alive
  (an RTMP server drops a silent publisher) while an upstream filter restarts.
- Every keyframe packet carries the stream `params` (see `mediaengine.sdk.codec`), with the SPS/PPS in
  `extradata` (the encoder uses GLOBAL_HEADER, so keyframes do not repeat them in-band); each packet's
  `meta["src_pts_ns"]` is the pts of the frame it encodes.
- Control command `keyframe` makes the next frame an IDR; so does any new value of the live option
  `keyframe_request` (the RTMP sender's rate controller sets it after dropping stale queued video).
- Event `source_changed` when the input frames' meta `source` changes (a camera named its device
  there and switched): the first frame of the new device has reached the encoder.
- Encoder: `codec: auto` tries the hardware encoders the FFmpeg build has and the machine can open,
  then libx264 (event `encoder_fallback` naming what failed); a named hardware codec that cannot open
  is a HardwareEncoderError (1350) unless `fallback: true` (`mediaengine.sdk.h264`).  Only libx264
  retargets its bit rate in place; a hardware encoder reopens at the new rate.
- Frame rate: FFmpeg opens x264 for a constant frame rate, where each frame gets bit rate / fps, so
  an input that delivers fewer frames than it declared (a camera slowing down in the dark, a busy
  machine) got proportionally fewer bits (measured: 512 and 349 kbit/s at a 700 kbit/s target for 22
  and 15 fps of a declared 30).  The encoder measures the rate the input's timestamps really have
  (their median interval over the last 2 s: a pause of the source is no lower rate) and, at a
  keyframe, reopens x264 at it when it is more than `FPS_RESYNC_SHARE` away from the rate x264 was
  opened with.  (x264's variable frame rate mode spends by timestamps, but holds every frame back
  until the next one comes: one frame more of latency.)
- `max_fps` (live): encode at most this many frames per second by skipping input frames (the rate
  controller lowers it at its bit rate floor in `fluency_first`: fewer, better pictures); event
  `fps_changed`.  It applies at the next keyframe, where x264 reopens at that frame rate, so that it
  spends the bit rate on the frames it gets (before, at 8 of 30 fps the encoder sent 27% of its
  target), and restoring it never hands 30 frames a second to an x264 that spends bit rate / 8 on
  each.  The keyframe interval stays `gop_s` in time meanwhile.

- A change of frame size or rate mid-stream arrives as `on_format_changed` before the first frame of
  the new format: the encoder drains and closes x264, then opens it again at the new size (the next
  frame is an IDR whose keyframe `params` carry the new size and SPS/PPS; event `encoder_started`
  with `reopen`).  A size H.264 cannot take (odd) is a FormatChangeError.
- `resolution` (live): the size pushed, whatever the source's: a preset (1080p, 720p, 540p, 480p,
  360p, 240p, 180p: that height, the input's aspect ratio, even sizes, never larger than the input)
  or `source`.  Input frames are scaled before the encoder (`scale_i420`, OpenCV INTER_AREA into a
  kept buffer); a change drains x264 and reopens it at the new size the same way as a format change
  (IDR, new SPS/PPS in the keyframe `params`, which the RTMP sender turns into a new AVC sequence
  header).  Event `resolution_changed` {width, height, previous, resolution, reason}: `set` (ctl,
  API or the rate controller's `Configure`) or `input` (the input size changed).
"""

from __future__ import annotations

import itertools
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from av.video.frame import PictureType
from mediaengine.sdk.actor import (
    Action,
    Actions,
    Actor,
    Context,
    Emit,
    EndOfStream,
    Event,
    InPort,
    OutPort,
    Reply,
    option,
)
from mediaengine.sdk.codec import packet_from_av, video_params
from mediaengine.sdk.errors import EncoderError, FormatChangeError, FormatError, FormatMismatchError, OptionError
from mediaengine.sdk.formats import H264, NS, Format, Frame, Packet, VideoFormat
from mediaengine.sdk.h264 import CODECS, PIX_FMTS, REOPEN_VBV_INIT, RETARGETS_IN_PLACE, EncoderSettings, open_h264
from mediaengine.sdk.resolution import RESOLUTION_NAMES, SOURCE, scaled_size

TIME_BASE = Fraction(1, 90_000)
#: x264 reopens at its target at the next keyframe when the target is above the rate it opened with, or
#: further under it than this share (see "Rate control" above)
RESYNC_SHARE = 0.1
#: ... or when the input's frame rate (`max_fps` applied) is further than this share from the frame rate
#: x264 opened with: x264 spends bit rate / fps on each frame (see "Frame rate" above)
FPS_RESYNC_SHARE = 0.15
#: a raise to more than this x the rate x264 opened with reopens it at once (an IDR) instead of at the
#: next keyframe: the rate controller recovering after the link came back (each probe raises the bit
#: rate 1.1-2x; waiting for keyframes put up to 2 s on each step)
RAISE_AT_ONCE = 1.2
ARRIVALS_NS = 2 * NS  # the input's frame rate is measured over this much of its timestamps
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
           "veryslow", "placebo")
TUNES = ("film", "animation", "grain", "stillimage", "psnr", "ssim", "fastdecode", "zerolatency")
PROFILES = ("baseline", "main", "high")
COLORSPACE_SMPTE170M = 6  # AVCOL_SPC_SMPTE170M: the BT.601 matrix OpenCV's I420 conversion uses
COLOR_RANGE_MPEG = 1  # AVCOL_RANGE_MPEG: limited ("tv") range


@dataclass(frozen=True)
class VideoEncoderOptions:
    bitrate_kbps: int = option(1200, range=(100, 20000), live=True, doc="target bit rate; live (100..20000)")
    keyframe_request: int = option(0, range=(0, None), live=True,
                                   doc="live: any new value makes the next frame an IDR (what the `keyframe` "
                                       "command does, for a node that steers this one with Configure)")
    preset: str = option("veryfast", choices=PRESETS, doc="x264 preset: ultrafast .. placebo")
    tune: str = option("zerolatency", doc='x264 tune(s), comma separated; "" for none')
    gop_s: float = option(2.0, doc="keyframe interval in seconds")
    bframes: int = option(0, range=(0, None), doc="max consecutive B-frames (0 = lowest latency)")
    threads: int = option(1, range=(0, None), doc="encoder threads (0 = x264 decides)")
    profile: str = option("", choices=("", *PROFILES),
                          doc='H.264 profile: baseline, main, high; "" = x264\'s choice')
    keepalive_ms: int = option(500, range=(0, None),
                               doc="repeat the last frame when no input arrives for this long; 0 = off")
    vbv_buffer_s: float = option(1.0, doc="VBV buffer size in seconds of the bit rate")
    max_fps: float = option(0.0, range=(0, 240), live=True,
                            doc="encode at most this many frames/s, skipping input frames (0 = every frame)")
    codec: str = option("libx264", choices=CODECS,
                        doc="H.264 encoder: auto (hardware if it opens, else libx264), libx264, h264_nvenc, "
                            "h264_vaapi, h264_qsv, h264_v4l2m2m")
    fallback: bool = option(False, doc="a named hardware codec that cannot open falls back to libx264 "
                                       "(event encoder_fallback) instead of failing (error 1350)")
    resolution: str = option(SOURCE, choices=(SOURCE, *RESOLUTION_NAMES), live=True,
                             doc="size pushed: source, or 1080p/720p/540p/480p/360p/240p/180p (input aspect "
                                 "ratio, even, never above the input); live: reopens at the new size (IDR)")


def rgb_to_i420(rgb: np.ndarray[Any, np.dtype[np.uint8]],
                out: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Convert an HxWx3 rgb24 picture into a (H*3/2)xW I420 (yuv420p) buffer, BT.601 limited range."""
    cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420, dst=out)
    return out


def scale_i420(src: np.ndarray[Any, np.dtype[np.uint8]],
               out: np.ndarray[Any, np.dtype[np.uint8]]) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """Resize an I420 picture ((H*3/2)xW) into `out` ((h*3/2)xw), plane by plane: INTER_AREA when
    shrinking (no aliasing), bilinear when enlarging.  Both sizes must be even."""
    sh, sw = src.shape[0] * 2 // 3, src.shape[1]
    dh, dw = out.shape[0] * 2 // 3, out.shape[1]
    interp = cv2.INTER_AREA if dw <= sw and dh <= sh else cv2.INTER_LINEAR
    s, d = src.reshape(-1), out.reshape(-1)  # views: the planes are consecutive
    s_y, d_y = sh * sw, dh * dw
    s_c, d_c = s_y // 4, d_y // 4
    planes = ((s[:s_y].reshape(sh, sw), d[:d_y].reshape(dh, dw)),
              (s[s_y:s_y + s_c].reshape(sh // 2, sw // 2), d[d_y:d_y + d_c].reshape(dh // 2, dw // 2)),
              (s[s_y + s_c:s_y + 2 * s_c].reshape(sh // 2, sw // 2), d[d_y + d_c:].reshape(dh // 2, dw // 2)))
    for plane, dst in planes:
        cv2.resize(plane, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=interp)
    return out


def ns_to_ticks(pts_ns: int, time_base: Fraction = TIME_BASE) -> int:
    """Engine nanoseconds to the nearest tick of `time_base` (half rounds up)."""
    num = pts_ns * time_base.denominator
    den = NS * time_base.numerator
    return (2 * num + den) // (2 * den)


def check_options(options: VideoEncoderOptions) -> None:
    """The checks `option()` cannot declare: a list of tunes, and durations that must be > 0."""
    for tune in filter(None, options.tune.split(",")):
        if tune not in TUNES:
            raise OptionError(f"tune {tune!r} is not an x264 tune ({', '.join(TUNES)})")
    if options.gop_s <= 0:
        raise OptionError(f"gop_s must be > 0, got {options.gop_s}")
    if options.vbv_buffer_s <= 0:
        raise OptionError(f"vbv_buffer_s must be > 0, got {options.vbv_buffer_s}")


class VideoEncoder(Actor[VideoEncoderOptions]):
    # block: an encoder must not lose frames to a momentary hiccup (x264 warm-up, a busy core); the ring
    # buffers a few frames and a consumer that stays stuck is skipped after the block timeout
    inputs = {"in": InPort("video", pix_fmts=("yuv420p", "rgb24"), policy="block")}
    outputs = {"out": OutPort("encoded", default=True)}
    Options = VideoEncoderOptions

    @classmethod
    def validate(cls, options: Any, input_formats: Mapping[str, Format]) -> None:
        check_options(options)
        fmt = input_formats.get("in")
        if isinstance(fmt, VideoFormat) and (fmt.width % 2 or fmt.height % 2):
            raise FormatMismatchError(
                f"H.264 (yuv420p) needs an even frame size, got {fmt.width}x{fmt.height}")

    @classmethod
    def output_formats(cls, options: Any, input_formats: Mapping[str, Format]) -> dict[str, Format]:
        return {"out": H264}

    def setup(self, ctx: Context) -> Actions:
        fmt = ctx.input_formats.get("in")
        if not isinstance(fmt, VideoFormat):
            raise FormatMismatchError(f"video_encoder needs a video input format, got {fmt!r}")
        self.node_id = ctx.node_id
        self._set_input(fmt)
        self._ctx: av.VideoCodecContext | None = None
        self._vbv_cap_kbps = 0
        self._have_picture = False  # _yuv holds the last encoded picture
        self._source: Any = None  # the input frames' meta `source` (a camera names its device there)
        self._last_pts: int | None = None  # last pts given to the encoder (ticks)
        self._last_key_pts: int | None = None  # pts of the last keyframe out (ticks)
        self._last_src_ns = 0
        self._src_ns: dict[int, int] = {}  # pts -> source pts_ns, until the packet comes out
        self._force_key = False
        self._since_key = 0  # frames encoded since the last keyframe (x264 makes one every `_gop` frames)
        # keepalive bookkeeping, on the tick clock
        self._now_ns: int | None = None
        self._arrived_ns: int | None = None  # tick time of the last real frame
        self._last_real_pts = 0
        # counters (read by the runtime for metrics)
        self.frames_in = 0
        self.frames_encoded = 0
        self.repeated_frames = 0
        self.dropped_frames = 0
        self.packets_out = 0
        self.reopens = 0
        self.skipped_frames = 0  # input frames left out to keep to max_fps
        self.codec = ""  # the H.264 encoder the first open chose (libx264, h264_nvenc, ...)
        return self._open(self.options.bitrate_kbps)

    def _set_input(self, fmt: VideoFormat) -> None:
        """Size, rate and conversion buffer for input frames of `fmt`."""
        self.fmt = fmt
        self.fps = fmt.fps if fmt.fps > 0 else 30.0
        self._max_fps = self.options.max_fps  # the max_fps applied (a live change applies at a keyframe)
        # the frame rate x264 opens with: the input's as delivered, at most max_fps
        self._enc_fps = min(self.fps, self._max_fps) if self._max_fps > 0 else self.fps
        self._arrivals: deque[int] = deque()  # pts of the input frames (ticks), the last ARRIVALS_NS
        self.interval = max(1, round(TIME_BASE.denominator / (self.fps * TIME_BASE.numerator)))
        self.tick_interval_ns = round(NS / self.fps) if self.options.keepalive_ms > 0 else None
        self._set_size()

    def _set_size(self) -> None:
        """The encoded size (`resolution` applied to the input's) and its buffers: `_yuv` holds the
        picture x264 takes; `_rgb` the scaled rgb24 input before conversion (rgb24 inputs only)."""
        fmt = self.fmt
        self.width, self.height = scaled_size(fmt.width, fmt.height, self.options.resolution)
        self.scaled = (self.width, self.height) != (fmt.width, fmt.height)
        self._yuv = np.empty((self.height * 3 // 2, self.width), np.uint8)
        self._rgb = (np.empty((self.height, self.width, 3), np.uint8)
                     if self.scaled and fmt.pix_fmt != "yuv420p" else None)

    # ---- encoder lifecycle -----------------------------------------------------------------

    def _open(self, bitrate_kbps: int) -> list[Action]:
        """Open the encoder (`codec`, see `mediaengine.sdk.h264`) at `bitrate_kbps`; returns the
        `encoder_started` event for the hook to return, after `encoder_fallback` when the codec asked
        for could not open.  A reopen uses the codec the first open chose (no new hardware probe)."""
        o = self.options
        gop = max(1, round(o.gop_s * self._enc_fps))
        settings = EncoderSettings(self.width, self.height, self._enc_fps, TIME_BASE, gop, o.bframes,
                                   bitrate_kbps, o.vbv_buffer_s, o.threads, o.preset, o.tune, o.profile,
                                   COLORSPACE_SMPTE170M, COLOR_RANGE_MPEG,
                                   vbv_init=REOPEN_VBV_INIT if self.reopens else 0.0)
        codec = self.codec or o.codec
        ctx, self.codec, failures = open_h264(codec, o.fallback, settings, where=self.node_id or None)
        self._ctx = ctx
        self._gop = gop
        self._vbv_cap_kbps = bitrate_kbps
        actions: list[Action] = []
        if failures:
            actions.append(Event("encoder_fallback", {
                "requested": codec, "codec": self.codec,
                "failed": [{"codec": f.codec, "error": f.error} for f in failures]}))
        return [*actions, Event("encoder_started", {
            "codec": self.codec, "width": self.width, "height": self.height, "fps": round(self._enc_fps, 3),
            "bitrate_kbps": bitrate_kbps, "gop": gop, "preset": o.preset, "tune": o.tune,
            "bframes": o.bframes, "reopen": self.reopens})]

    def _reopen(self, bitrate_kbps: int) -> list[Action]:
        """Drain and close x264, then open it again at `bitrate_kbps` and at the frame rate it should
        have now (`max_fps` applies here); the next frame is an IDR."""
        actions = self._flush()
        self.reopens += 1
        self._enc_fps = self._wanted_fps()
        self._max_fps = self.options.max_fps
        actions.extend(self._open(bitrate_kbps))
        return actions

    def _flush(self) -> list[Action]:
        """Drain and close the encoder; the next frame opens a new one."""
        ctx, self._ctx = self._ctx, None
        if ctx is None:
            return []
        return self._packets(ctx, None)

    # ---- encoding ----------------------------------------------------------------------------
    def _encode(self, pts: int, src_ns: int) -> list[Action]:
        actions: list[Action] = []
        if self._ctx is None:
            actions.extend(self._open(self.options.bitrate_kbps))
        assert self._ctx is not None
        frame = av.VideoFrame.from_numpy_buffer(self._yuv, format="yuv420p")
        if PIX_FMTS[self.codec] != "yuv420p":  # e.g. h264_qsv takes nv12
            frame = frame.reformat(format=PIX_FMTS[self.codec])
        frame.pts = pts
        frame.time_base = TIME_BASE
        frame.colorspace = COLORSPACE_SMPTE170M
        frame.color_range = COLOR_RANGE_MPEG
        key = self._force_key or self._gop_elapsed(pts)
        if (key or self._since_key >= self._gop - 1) and self._resync_due():
            # a keyframe comes now anyway: reopen at the target bit rate and frame rate (the new encoder's
            # first frame is the IDR)
            actions.extend(self._reopen(self.options.bitrate_kbps))
            key = False
        if key:
            frame.pict_type = PictureType.I
        self._force_key = False
        self._last_pts = pts
        self._src_ns[pts] = src_ns
        self.frames_encoded += 1
        return actions + self._packets(self._ctx, frame)

    def _packets(self, ctx: av.VideoCodecContext, frame: av.VideoFrame | None) -> list[Action]:
        try:
            out = ctx.encode(frame)
        except av.FFmpegError as e:
            raise EncoderError(f"{self.codec} failed to encode: {e}", where=self.node_id or None) from e
        actions: list[Action] = []
        for pkt in out:
            params = video_params(ctx, self.fps) if pkt.is_keyframe else None
            self._since_key = 0 if pkt.is_keyframe else self._since_key + 1
            if pkt.is_keyframe and pkt.pts is not None:
                self._last_key_pts = pkt.pts
            src = self._src_ns.pop(pkt.pts, None) if pkt.pts is not None else None
            packet = packet_from_av(pkt, params=params, meta={} if src is None else {"src_pts_ns": src})
            self.packets_out += 1
            actions.append(Emit("out", packet))
        if len(self._src_ns) > 64:  # entries the encoder never returned (should not happen)
            for key in sorted(self._src_ns)[:-32]:
                del self._src_ns[key]
        return actions

    # ---- hooks -------------------------------------------------------------------------------
    def on_frame(self, pad: str, media: Frame | Packet) -> Actions:
        if not isinstance(media, Frame):
            raise FormatError(f"video_encoder got a packet on {pad!r}, expected raw video")
        self.frames_in += 1
        data = media.data
        if data.shape != self.fmt.shape:
            raise FormatError(f"frame of shape {data.shape} on a {self.fmt.describe()} input "
                              "(a size change mid-stream is not supported yet)")
        pts = ns_to_ticks(media.pts_ns)
        self._arrived_ns = self._now_ns  # input is alive, even if this frame is dropped below
        if self._last_pts is not None and pts <= self._last_pts:
            self.dropped_frames += 1
            return None
        self._arrivals.append(pts)
        while self._arrivals[0] < pts - ARRIVALS_NS * TIME_BASE.denominator // NS:
            self._arrivals.popleft()
        if self.fmt.pix_fmt == "yuv420p":
            if self.scaled:
                scale_i420(data, self._yuv)
            else:
                np.copyto(self._yuv, data)  # already what x264 takes: no conversion
        elif self._rgb is not None:
            interp = cv2.INTER_AREA if self.width <= self.fmt.width else cv2.INTER_LINEAR
            cv2.resize(data, (self.width, self.height), dst=self._rgb, interpolation=interp)
            rgb_to_i420(self._rgb, self._yuv)
        else:
            rgb_to_i420(data, self._yuv)
        self._have_picture = True
        self._last_real_pts = pts
        self._last_src_ns = media.pts_ns
        changed = self._source_changed(media)
        if self._skip_for_fps(pts):
            self.skipped_frames += 1
            return changed or None
        return [*changed, *self._encode(pts, media.pts_ns)]

    def _source_changed(self, media: Frame) -> list[Action]:
        """`source_changed` when the input's meta `source` changes (a camera switched devices): the time
        its first frame reached the encoder, for users and for the switch-latency test."""
        source = media.meta.get("source")
        if source is None or source == self._source:
            return []
        self._source = source
        return [Event("source_changed", {"source": source, "pts_ns": media.pts_ns, "frames_in": self.frames_in})]

    def _gop_elapsed(self, pts: int) -> bool:
        """x264 counts its keyframe interval in frames of the rate it opened with; when fewer come (the
        input slowed down, `max_fps` skips frames before the encoder reopens at that rate) it would
        stretch (2 s at 30 fps is 7.5 s at 8 fps): a keyframe is then forced once `gop_s` has passed
        since the last one, so a viewer joining, or a sender waiting for a keyframe after dropping
        video, waits no longer than at the full rate (at the full rate this is x264's own keyframe)."""
        if self._last_key_pts is None:
            return False
        return pts - self._last_key_pts >= self.options.gop_s * TIME_BASE.denominator - self.interval / 2

    def _resync_due(self) -> bool:
        """Whether the encoder should reopen at this keyframe: the target bit rate is above the rate
        x264 opened with (a raise waits for the keyframe) or more than `RESYNC_SHARE` under it (a cut
        retargeted in place keeps the old VBV buffer), or the frame rate it gets moved more than
        `FPS_RESYNC_SHARE` from the one it opened with."""
        if self._ctx is None:
            return False
        opened, target = self._vbv_cap_kbps, self.options.bitrate_kbps
        if self.codec in RETARGETS_IN_PLACE and (target > opened or opened - target > RESYNC_SHARE * opened):
            return True
        return abs(self._wanted_fps() - self._enc_fps) > FPS_RESYNC_SHARE * self._enc_fps

    def _wanted_fps(self) -> float:
        """The frame rate to open the encoder with: what the input delivers (the median interval of its
        timestamps over the last 2 s, so that a pause of the source, an upstream restart, is one long
        interval and not a lower rate; the declared rate until a second is known), at most `max_fps`."""
        rate = self.fps
        if len(self._arrivals) > 2 and self._arrivals[-1] - self._arrivals[0] >= TIME_BASE.denominator:
            gaps = [b - a for a, b in itertools.pairwise(self._arrivals)]
            rate = TIME_BASE.denominator / statistics.median(gaps)
        cap = self.options.max_fps
        return min(rate, cap) if cap > 0 else rate

    def _skip_for_fps(self, pts: int) -> bool:
        """`max_fps` below the input rate: skip a frame that comes less than one output interval
        (minus half an input interval, for jitter) after the last encoded one."""
        cap = self._max_fps
        if cap <= 0 or cap >= self.fps or self._last_pts is None:
            return False
        return pts - self._last_pts < TIME_BASE.denominator / cap - self.interval / 2

    def on_tick(self, now_ns: int) -> Actions:
        self._now_ns = now_ns
        keepalive_ns = self.options.keepalive_ms * 1_000_000
        if keepalive_ns <= 0 or not self._have_picture or self._last_pts is None:
            return None
        if self._arrived_ns is None:  # frames came before the first tick
            self._arrived_ns = now_ns
        idle_ns = now_ns - self._arrived_ns
        if idle_ns < keepalive_ns:
            return None
        # Fill the timeline up to "now", mapped onto pts through the last real frame.
        horizon = self._last_real_pts + ns_to_ticks(idle_ns)
        actions: list[Action] = []
        max_burst = max(1, round(2 * self.fps))
        while self._last_pts + self.interval <= horizon and max_burst > 0:
            self.repeated_frames += 1
            max_burst -= 1
            actions.extend(self._encode(self._last_pts + self.interval, self._last_src_ns))
        return actions

    def metrics(self) -> dict[str, Any]:
        """Counters the runtime publishes with its own metrics."""
        return {"frames_in": self.frames_in, "frames_encoded": self.frames_encoded,
                "repeated_frames": self.repeated_frames, "dropped_frames": self.dropped_frames,
                "packets_out": self.packets_out, "reopens": self.reopens,
                "skipped_frames": self.skipped_frames, "codec": self.codec,
                "bitrate_kbps": self.options.bitrate_kbps, "width": self.width, "height": self.height}

    def on_control(self, command: str, args: dict[str, Any]) -> Actions:
        if command == "keyframe":
            self._force_key = True
            return [Reply({"keyframe": "next frame"})]
        return super().on_control(command, args)

    def on_option_changed(self, name: str, value: Any) -> Actions:
        if name == "keyframe_request":
            self._force_key = True
            return None
        if name == "max_fps":
            return [Event("fps_changed", {"max_fps": float(value), "input_fps": self.fps, "at_keyframe": True})]
        if name == "resolution":
            return self._resize("set")
        if name != "bitrate_kbps":
            return None
        kbps = int(value)
        reopened = False
        actions: list[Action] = []
        if self._ctx is not None and self.codec in RETARGETS_IN_PLACE and kbps <= RAISE_AT_ONCE * self._vbv_cap_kbps:
            # down: in place now; up to the VBV cap: in place; above it: at the next keyframe (_resync_due)
            self._ctx.bit_rate = min(kbps, self._vbv_cap_kbps) * 1000
        elif self._ctx is not None:  # a big raise, or a hardware encoder (no retarget): reopen, an IDR now
            actions.extend(self._reopen(kbps))
            reopened = True
        actions.append(Event("bitrate_changed", {"bitrate_kbps": kbps, "reopened": reopened,
                                                 "at_keyframe": not reopened and kbps > self._vbv_cap_kbps}))
        return actions

    def on_format_changed(self, pad: str, fmt: Format) -> Actions:
        """A new input size or rate: drain x264 and open it again at the new format (the next frame is
        an IDR whose `params` carry the new size and SPS/PPS, so muxers downstream can follow)."""
        super().on_format_changed(pad, fmt)  # the port check; an encoder's output format stays h264
        if not isinstance(fmt, VideoFormat) or fmt.width % 2 or fmt.height % 2:
            raise FormatChangeError(f"H.264 (yuv420p) needs an even frame size, got {fmt.describe()}",
                                    where=self.node_id or None)
        actions = self._flush()  # packets of the old size go out first
        before = (self.width, self.height)
        self._set_input(fmt)
        self._have_picture = False  # the last picture has the old size: no keepalive repeat of it
        self.reopens += 1
        actions.extend(self._open(self.options.bitrate_kbps))
        if (self.width, self.height) != before:
            actions.append(self._resolution_event(before, "input"))
        return actions

    def _resize(self, reason: str) -> list[Action]:
        """`resolution` changed: reopen at the new encoded size (nothing happens if the size stays)."""
        before = (self.width, self.height)
        if scaled_size(self.fmt.width, self.fmt.height, self.options.resolution) == before:
            return []
        actions = self._flush()  # packets of the old size go out first
        self._set_size()
        self._have_picture = False  # the kept picture has the old size: the next frame is the first
        actions.extend(self._reopen(self.options.bitrate_kbps))
        actions.append(self._resolution_event(before, reason))
        return actions

    def _resolution_event(self, before: tuple[int, int], reason: str) -> Event:
        return Event("resolution_changed", {
            "width": self.width, "height": self.height, "previous": list(before),
            "resolution": self.options.resolution, "reason": reason})

    def on_eos(self, pad: str) -> Actions:
        self._have_picture = False  # no keepalive after the input ended
        actions = self._flush()
        actions.append(EndOfStream())
        return actions

    def stop(self) -> Actions:
        self._have_picture = False
        return self._flush()

