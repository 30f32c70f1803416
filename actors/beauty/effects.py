"""Skin smoothing, whitening, brightness, rosy tone and blush of one face box: planes computed small,
applied at full size in one go.

The colour effects are folded together so that a 720p face box costs a few full-resolution operations
whatever is on (`python -m tools.bench beauty` has the figures):

- whitening, brightness and rosy tone are one per-channel tone curve (`tone_lut`): L = LUT(I);
- smoothing is a self-guided *fast guided filter* (He & Sun 2015) on the tone-mapped box scaled down so
  the face is ~`SMALL_FACE` px wide: its coefficients give q = A*L + B, where A ~ 0 on flat skin (texture
  and noise replaced by the smooth local mean) and A ~ 1 on edges (eyes, lips, hair kept);
- the skin mask m (0..1, `regions.skin_mask`) limits all of it to skin, and the blush is a per-channel
  gain g on the cheek patches (it keeps the skin's texture, unlike painting a colour over it);
- at the small scale these fold into three coefficient planes:  out = C1*I + C2*L + C3 with
  C1 = g(1 - m), C2 = g m (1 - s + s A), C3 = g m s B, which are scaled up and applied once.

Where m = 0 and g = 1 (outside the face oval and the cheek patches) out = I exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from .regions import Box, Landmarks, cheek_weights, face_frame, skin_mask

__all__ = ["SMALL_FACE", "ToneAmounts", "ToneScratch", "apply_tone", "tone_lut"]

#: face width in pixels at which the skin mask, the smoothing statistics and the blush are computed (150
#: until 2026-12-02: 75 costs 0.8 ms less per 720p frame, every effect measures the same in the tests, and
#: the mask's edges around the eyes and brows come out softer, not blockier)
SMALL_FACE = 75
#: the blush colour's per-channel gain at full strength (R, G, B): redder, less green and blue
_BLUSH_GAIN = np.array([0.05, -0.13, -0.07], np.float32)


@dataclass(frozen=True)
class ToneAmounts:
    """Strengths 0..1 of the colour effects (already scaled by the face's fade weight)."""

    smooth: float = 0.0
    whiten: float = 0.0
    bright: float = 0.0
    rosy: float = 0.0
    blush: float = 0.0

    def any(self) -> bool:
        return max(self.smooth, self.whiten, self.bright, self.rosy, self.blush) > 0.0


def tone_lut(whiten: float, bright: float, rosy: float) -> NDArray[np.uint8] | None:
    """The tone curve for `cv2.LUT`: (256,) when it is the same for every channel, (256, 1, 3) per channel
    (R, G, B) with a rosy tone, None if it is the identity.  Whitening: the classic log curve
    255 log(1 + (b-1)x)/log b (lifts mid-tones most, keeps 0 and 255); brightness: a gamma lift; rosy: a
    little more red, a little less green."""
    if max(whiten, bright, rosy) <= 0.0:
        return None
    x = np.arange(256, dtype=np.float64) / 255.0
    y = x.copy()
    if whiten > 0:
        b = 1.0 + 3.0 * whiten
        y = np.log1p((b - 1.0) * y) / np.log(b)
    if bright > 0:
        y = y ** (1.0 / (1.0 + 0.45 * bright))
    if rosy <= 0:
        return np.clip(np.round(y * 255.0), 0, 255).astype(np.uint8)
    hump = y * (1.0 - y) * 4.0  # 0 at black and white, 1 in the middle
    r = y + 0.06 * rosy * hump
    g = y - 0.035 * rosy * hump
    bl = y + 0.005 * rosy * hump
    lut = np.stack([r, g, bl], axis=-1).reshape(256, 1, 3)
    return np.clip(np.round(lut * 255.0), 0, 255).astype(np.uint8)


@dataclass
class ToneScratch:
    """Buffers kept from frame to frame (big per-frame temporaries cost page faults, see the notes)."""

    bufs: dict[str, NDArray[np.float32]] = field(default_factory=dict)
    mask: NDArray[np.uint8] | None = None
    luts: tuple[NDArray[np.uint8], NDArray[np.float32]] | None = None  # the last tone curve, and as float32

    def float_lut(self, lut: NDArray[np.uint8]) -> NDArray[np.float32]:
        """`lut` as float32 (for `cv2.LUT` straight to float32), kept while the curve stays the same."""
        if self.luts is None or self.luts[0] is not lut:
            self.luts = (lut, lut.astype(np.float32))
        return self.luts[1]

    def get(self, name: str, shape: tuple[int, ...]) -> NDArray[np.float32]:
        b = self.bufs.get(name)
        if b is None or b.shape != shape:
            b = self.bufs[name] = np.empty(shape, np.float32)
        return b


def _box_filter(src: NDArray[np.float32], r: int) -> NDArray[np.float32]:
    out: NDArray[np.float32] = cv2.boxFilter(src, -1, (2 * r + 1, 2 * r + 1), borderType=cv2.BORDER_REFLECT)
    return out


def apply_tone(box_rgb: NDArray[np.uint8], lms: Landmarks, box: Box, amounts: ToneAmounts,
               lut: NDArray[np.uint8] | None, dst: NDArray[np.uint8], scratch: ToneScratch) -> None:
    """Smooth and tone the skin of one face: `box_rgb` is the frame's `box` (read only), the result goes to
    `dst` (same shape; may not alias `box_rgb`).  `lms` are frame coordinates.

    With L = LUT(I) the tone-mapped box, M the local mean and A the guided filter's edge weight (on luma,
    shared by the channels), w = s(1 - A) the smoothing weight (s the strength), m the skin mask and G
    the blush's per-channel gain (1 + its cheek weights x gain; 1 off the cheeks):
        X   = (1 - w) L + w M                   smoothed and toned skin
        out = ((1 - m) I + m X) G               only on skin, the blush on top
            = P I + Q L + R                     P = (1 - m) G, Q = m (1 - w) G, R = m w M G
    P, Q and R are computed at the small scale, scaled up and applied in float32: a handful of OpenCV's
    vectorised passes over the box (an earlier form with two `cv2.blendLinear`, which are not
    vectorised, and the blush's own passes took about twice as long: BENCHMARKS.md, beauty).
    """
    h, w = box_rgb.shape[:2]
    ff = face_frame(lms)
    k = max(1, round(ff.width / SMALL_FACE))  # an integer factor: INTER_AREA's fast path
    sw, sh = max(8, w // k), max(8, h // k)
    scale = min(sw / w, sh / h)
    small_mask = skin_mask(lms, box, scale, scratch.mask)
    scratch.mask = small_mask
    if small_mask.shape != (sh, sw):
        small_mask = cv2.resize(small_mask, (sw, sh), interpolation=cv2.INTER_LINEAR)
    m = scratch.get("m", (sh, sw))
    np.multiply(small_mask, np.float32(1.0 / 255.0), out=m)
    p = scratch.get("p", (sh, sw, 3))
    q = scratch.get("q", (sh, sw, 3))
    r: NDArray[np.float32] | None = None
    if amounts.smooth > 0:
        # the box cut to whole k x k blocks: INTER_AREA's integer fast path (a box whose side is not a
        # multiple of k took the general path: 0.49 ms against 0.14; the rows and columns left out are
        # at the box's rim, off the skin)
        small = cv2.resize(box_rgb[:sh * k, :sw * k], (sw, sh), interpolation=cv2.INTER_AREA)
        if lut is not None:
            small = cv2.LUT(small, lut)
        grey = scratch.get("grey", (sh, sw))
        np.multiply(cv2.cvtColor(small, cv2.COLOR_RGB2GRAY), np.float32(1.0 / 255.0), out=grey)
        radius = max(1, round(0.045 * ff.width / k))
        eps = np.float32((0.03 + 0.1 * amounts.smooth) ** 2)
        mean_i = _box_filter(grey, radius)
        var = _box_filter(grey * grey, radius) - mean_i * mean_i
        a = _box_filter(var / (var + eps), radius)  # ~0 on flat skin, ~1 on edges
        mw = m * (np.float32(min(1.0, 1.25 * amounts.smooth)) * (1.0 - a))  # m w
        r = scratch.get("r", (sh, sw, 3))
        cv2.boxFilter(small, cv2.CV_32F, (2 * radius + 1, 2 * radius + 1), dst=r, borderType=cv2.BORDER_REFLECT)
        cv2.multiply(r, cv2.merge([mw, mw, mw]), dst=r)  # m w M
        cv2.merge([m - mw] * 3, dst=q)  # m (1 - w)
    else:
        cv2.merge([m, m, m], dst=q)
    cv2.merge([1.0 - m] * 3, dst=p)
    if amounts.blush > 0:
        gain = scratch.get("gain", (sh, sw, 3))
        np.multiply(cheek_weights(lms, box, scale, (sh, sw))[..., None], _BLUSH_GAIN * np.float32(amounts.blush),
                    out=gain)
        gain += np.float32(1.0)
        for plane in (p, q, r):
            if plane is not None:
                cv2.multiply(plane, gain, dst=plane)
    if lut is None:  # L = I: P I + Q L = (P + Q) I
        cv2.add(p, q, dst=p)
    out = scratch.get("out", (h, w, 3))
    big = scratch.get("big", (h, w, 3))
    np.copyto(out, box_rgb)  # I, as float32
    cv2.resize(p, (w, h), dst=big, interpolation=cv2.INTER_LINEAR)
    cv2.multiply(out, big, dst=out)  # P I
    if lut is not None:
        lut_f = scratch.float_lut(lut)
        toned = scratch.get("toned", (h, w, 3))
        cv2.LUT(box_rgb, lut_f, dst=toned)  # L, as float32
        cv2.resize(q, (w, h), dst=big, interpolation=cv2.INTER_LINEAR)
        cv2.multiply(toned, big, dst=toned)
        cv2.add(out, toned, dst=out)  # + Q L
    if r is not None:
        cv2.resize(r, (w, h), dst=big, interpolation=cv2.INTER_LINEAR)
        cv2.add(out, big, dst=out)  # + R
    cv2.convertScaleAbs(out, dst=dst)  # rounded to the nearest level, saturated (out >= 0)
