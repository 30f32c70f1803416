"""Face reshaping (thinning, chin, eye enlarging) as ONE inverse map and one `cv2.remap` of the face box.

Each effect is a smooth displacement field with compact support around landmarks; they are summed, so a
frame pays one remap whatever is on (measured ~1.4 ms for a 720p face box, see BENCHMARKS.md):

- eyes: a radial bulge around each eye centre, radius 1.1 x the eye's width: src = c + (p - c)(1 - a w),
  w = (1 - r^2/R^2)^2.  Its radial profile r(1 - a w) is monotonic for a < 1, so it never folds.
- thinning / chin: content at jaw and chin landmarks is moved by a vector t (inwards, or up towards the
  mouth) with the inverse translation src = p - t phi, phi = (1 - r^2/R^2)^2; the points' fields are
  summed and divided by one constant (their largest overlap at a point), so the jaw moves as one line
  and the field stays as smooth as phi (a per-pixel normalisation made it steep enough to fold).

Safety nets that keep the picture whole (a naive local warp tore at its edge):
- the field is computed on a coarse grid (every `GRID` pixels, at the centres of GRID x GRID cells) and
  scaled up with one bilinear `cv2.resize` (its pixel-centre convention puts the nodes exactly there), so
  it is smooth;
- it is tapered to 0 at the box's sides that lie inside the frame, so the box joins the untouched frame;
- the Jacobian of the map is checked on the grid: if it would fold anywhere (det <= MIN_DET) the whole
  field is scaled down until it does not (`WarpMaps.scale` says by how much).

Where the field is exactly 0 the map is exactly the identity, and `cv2.remap` then copies the pixel
unchanged: pixels outside the support, and everything outside the box, are bit-exact.  `WarpMaps.rect`
is the part of the box the field reaches (about 60% of it with every effect on, less with one): only
it needs remapping.  The table holds the displacement itself, not source coordinates: `cv2.remap` adds
each pixel's own position (`cv2.WARP_RELATIVE_MAP`, OpenCV 4.10), which spares a full-size pass that
added an identity table (`remap_rect` does the call).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from numpy.typing import NDArray

from .regions import CHIN, CHIN_SIDES, CHIN_SLIM_L, CHIN_SLIM_R, EYE_L, EYE_R, JAW_L, JAW_R, Box, Landmarks, face_frame

__all__ = ["GRID", "MIN_DET", "WarpAmounts", "WarpMaps", "displacement", "fold_margin", "map_buffer", "remap_rect",
           "warp_maps"]

#: coarse-grid step in pixels of the displacement field
GRID = 12
#: the smallest Jacobian determinant allowed (1 = no area change; 0 = a fold)
MIN_DET = 0.25

#: weight of each jaw point in thinning (ear .. chin), per side: the cheeks move most
_JAW_WEIGHTS = np.array([0.45, 0.8, 1.0, 1.0, 0.85, 0.6], np.float32)
#: the points each reshaping effect moves, and the weight of each along the face's axis (the sign makes
#: both sides move inwards: `across` points to the image's right)
_THIN_POINTS = [*JAW_R, *JAW_L]
_THIN_SIDES = np.concatenate([_JAW_WEIGHTS, -_JAW_WEIGHTS])
_CHIN_SLIM_POINTS = [*CHIN_SLIM_R, *CHIN_SLIM_L]
_CHIN_SLIM_SIDES = np.array([0.4, 0.8, 1.0, 0.7, -0.4, -0.8, -1.0, -0.7], np.float32)
_CHIN_SHORT_POINTS = [CHIN, *CHIN_SIDES]
_CHIN_SHORT_WEIGHTS = np.array([1.0] + [0.7] * len(CHIN_SIDES), np.float32)
#: both eye contours (eye enlarging: a bulge around each centre, as wide as the eye)
_EYES = [EYE_R, EYE_L]


@dataclass(frozen=True)
class WarpAmounts:
    """Strengths 0..1 of the reshaping effects (already scaled by the face's fade weight)."""

    thin: float = 0.0
    chin_slim: float = 0.0
    chin_short: float = 0.0
    eye: float = 0.0

    def any(self) -> bool:
        return max(self.thin, self.chin_slim, self.chin_short, self.eye) > 0.0


@dataclass
class WarpMaps:
    d: NDArray[np.float32]  # (rect h, rect w, 2): the displacement (dx, dy) to the source of every pixel of `rect`
    scale: float  # 1.0, or less when the fold check scaled the field down
    max_shift: float  # the largest displacement in pixels
    rect: Box = (0, 0, 0, 0)  # (x, y, w, h) in the box: the part that moves; outside it the map is the identity

    def full(self, w: int, h: int) -> NDArray[np.float32]:
        """The map of the whole w x h box (the identity outside `rect`): for checks, not per frame."""
        grid = np.array(_identity(w, h))
        x, y, rw, rh = self.rect
        grid[y:y + rh, x:x + rw] += self.d
        return grid


def displacement(lms: Landmarks, box: Box, amounts: WarpAmounts, step: int = GRID
                 ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """The inverse displacement (dx, dy) on a coarse grid over `box`: grid node (i, j) is box pixel
    (j * step + c, i * step + c) with c = (step - 1) / 2 (the centre of cell (i, j) when the grid is scaled
    up `step` times by `cv2.resize`); the source of an output pixel p is p + D(p)."""
    x0, y0, w, h = box
    ny, nx = h // step + 2, w // step + 2
    c = (step - 1) / 2
    gx = (np.arange(nx, dtype=np.float32) * step + (x0 + c))[None, :]
    gy = (np.arange(ny, dtype=np.float32) * step + (y0 + c))[:, None]
    dx = np.zeros((ny, nx), np.float32)
    dy = np.zeros((ny, nx), np.float32)
    ff = face_frame(lms)
    # thinning and chin: translations of landmark points, averaged where they overlap.  Each group of points
    # moves along one of the face's axes: its moves are (weights x strength) times that axis, one step each
    groups: list[tuple[list[int], NDArray[np.float32], NDArray[np.float32], float]] = []
    if amounts.thin > 0:
        groups.append((_THIN_POINTS, _THIN_SIDES * np.float32(0.17 * ff.width * amounts.thin), ff.across,
                       0.22 * ff.width))
    if amounts.chin_slim > 0:
        # the chin's sides, where the jaw line still runs downwards (at the tip it runs across, and moving
        # it across changes nothing): a V-shaped chin
        groups.append((_CHIN_SLIM_POINTS, _CHIN_SLIM_SIDES * np.float32(0.17 * ff.width * amounts.chin_slim),
                       ff.across, 0.22 * ff.width))
    if amounts.chin_short > 0:
        groups.append((_CHIN_SHORT_POINTS, _CHIN_SHORT_WEIGHTS * np.float32(-0.06 * ff.height * amounts.chin_short),
                       ff.down, 0.2 * ff.width))
    if groups:
        idx = [i for g in groups for i in g[0]]
        q = lms[idx]
        t = np.concatenate([g[1][:, None] * g[2][None, :] for g in groups])
        radii = np.concatenate([np.full(len(g[0]), g[3], np.float32) for g in groups])
        # all points at once, shape (K, ny, nx); inverse translation evaluated around where each lands (q + t)
        inv_r2 = (1.0 / radii ** 2)[:, None, None]
        land = q + t
        ex = gx[None] - land[:, 0, None, None]
        ey = gy[None] - land[:, 1, None, None]
        phi = ex * ex + ey * ey  # in place from here: phi = (1 - min(1, r^2 / R^2))^2
        phi *= inv_r2
        np.minimum(phi, np.float32(1.0), out=phi)
        np.subtract(np.float32(1.0), phi, out=phi)
        np.multiply(phi, phi, out=phi)
        # one constant for the whole field (so it stays as smooth as phi): the largest overlap of the
        # points' weights at a landing point, so the jaw moves by about t where the points crowd
        dl = land[:, None, :] - land[None, :, :]
        at_points = (1.0 - np.minimum(np.sum(dl * dl, axis=2) * inv_r2[:, :, 0], 1.0)) ** 2
        norm = np.float32(max(1.0, float(at_points.sum(axis=0).max())))
        # a weighted sum over the points by einsum's own loops (optimize=False, its default): np.tensordot
        # would call BLAS (gemv), and OpenBLAS then wakes its thread pool, whose threads spin for a while
        # after each call: at 30 fps that burnt most of a second core (BENCHMARKS.md, beauty)
        moved = np.einsum("kc,kij->cij", t / norm, phi, optimize=False)
        dx -= moved[0]
        dy -= moved[1]
    if amounts.eye > 0:  # both eyes at once, shape (2, ny, nx)
        eyes = lms[_EYES]
        c = eyes.sum(axis=1) * np.float32(1.0 / len(EYE_R))
        corners = eyes[:, 0] - eyes[:, 8]  # corner to corner
        r2 = (corners * corners).sum(axis=1) * np.float32(1.1 ** 2)
        ex = gx[None] - c[:, 0, None, None]
        ey = gy[None] - c[:, 1, None, None]
        u = np.minimum((ex * ex + ey * ey) * (1.0 / r2)[:, None, None], np.float32(1.0))
        wgt = (1.0 - u) * (1.0 - u) * np.float32(0.42 * amounts.eye)
        dx -= (ex * wgt).sum(axis=0)
        dy -= (ey * wgt).sum(axis=0)
    return dx, dy


def _taper(box: Box, frame_shape: tuple[int, ...], ny: int, nx: int, step: int) -> NDArray[np.float32]:
    """1 inside, falling to 0 at the box's sides that are inside the frame (over ~8% of the box): 0 at the
    first node and at every node within one step past the last pixel, so the scaled-up field is exactly 0
    on the box's edge pixels."""
    x0, y0, w, h = box
    fh, fw = frame_shape[:2]
    c = (step - 1) / 2
    gx = np.arange(nx, dtype=np.float32) * step + np.float32(c)
    gy = np.arange(ny, dtype=np.float32) * step + np.float32(c)
    band_x, band_y = max(step, 0.08 * w), max(step, 0.08 * h)
    tx = np.ones(nx, np.float32)
    ty = np.ones(ny, np.float32)
    if x0 > 0:
        tx = np.minimum(tx, np.clip((gx - c) / band_x, 0, 1))
    if x0 + w < fw:
        tx = np.minimum(tx, np.clip((w - 1 - step - gx) / band_x, 0, 1))
    if y0 > 0:
        ty = np.minimum(ty, np.clip((gy - c) / band_y, 0, 1))
    if y0 + h < fh:
        ty = np.minimum(ty, np.clip((h - 1 - step - gy) / band_y, 0, 1))
    t: NDArray[np.float32] = ty[:, None] * tx[None, :]
    return t


def fold_margin(dx: NDArray[np.float32], dy: NDArray[np.float32], step: int = GRID) -> float:
    """The smallest Jacobian determinant of p -> p + D(p) over the grid (1 = identity, <= 0 = folded)."""
    if min(dx.shape) < 2:
        return 1.0
    gxy, gxx = _gradient(dx, step)  # d/d(row), d/d(column)
    gyy, gyx = _gradient(dy, step)
    det = (1 + gxx) * (1 + gyy) - gxy * gyx
    return float(det.min()) if det.size else 1.0


def _gradient(f: NDArray[np.float32], step: float) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """`np.gradient(f, step)` of a 2-D grid with at least 2 nodes each way (central differences inside,
    one-sided at the edges), written out: np.gradient's own bookkeeping cost more than the arithmetic."""
    rows = np.empty_like(f)
    cols = np.empty_like(f)
    half, whole = np.float32(0.5 / step), np.float32(1.0 / step)
    np.multiply(f[2:] - f[:-2], half, out=rows[1:-1])
    np.multiply(f[1] - f[0], whole, out=rows[0])
    np.multiply(f[-1] - f[-2], whole, out=rows[-1])
    np.multiply(f[:, 2:] - f[:, :-2], half, out=cols[:, 1:-1])
    np.multiply(f[:, 1] - f[:, 0], whole, out=cols[:, 0])
    np.multiply(f[:, -1] - f[:, -2], whole, out=cols[:, -1])
    return rows, cols


def warp_maps(lms: Landmarks, box: Box, frame_shape: tuple[int, ...], amounts: WarpAmounts,
              step: int = GRID, buffer: NDArray[np.float32] | None = None) -> WarpMaps | None:
    """The remap tables of the face box for `amounts`, or None when nothing moves.  With `buffer` (from
    `map_buffer`, kept by the caller from frame to frame) the tables are a view into it, not a new array
    (a face box's table is ~1 MB: a new one per frame costs page faults)."""
    if not amounts.any() or box[2] < 2 or box[3] < 2:
        return None
    _x0, _y0, w, h = box
    dx, dy = displacement(lms, box, amounts, step)
    taper = _taper(box, frame_shape, *dx.shape, step)
    dx *= taper
    dy *= taper
    scale = 1.0
    while fold_margin(dx * scale, dy * scale, step) <= MIN_DET and scale > 0.05:
        scale *= 0.7
    if scale < 1.0:
        dx *= scale
        dy *= scale
    max_shift = float(np.sqrt(dx * dx + dy * dy).max())
    if max_shift == 0.0:
        return None
    # only the part that moves: pixel p reads nodes floor((p - c) / step) and the next, so the nodes that
    # move and one still node on each side cover it
    moving = (dx != 0) | (dy != 0)
    rows, cols = np.flatnonzero(moving.any(axis=1)), np.flatnonzero(moving.any(axis=0))
    ny, nx = dx.shape
    i0, i1 = max(0, int(rows[0]) - 1), min(ny - 1, int(rows[-1]) + 1)
    j0, j1 = max(0, int(cols[0]) - 1), min(nx - 1, int(cols[-1]) + 1)
    rx, ry = j0 * step, i0 * step
    rw, rh = min(w, (j1 + 1) * step) - rx, min(h, (i1 + 1) * step) - ry
    # scale that part of the grid field up to every pixel: resizing by exactly `step` puts node (i, j) on
    # the centre of cell (i, j), pixel (j*step + c, i*step + c), and interpolates bilinearly between nodes
    # (pixels before the first node take its value: a still node, 0, as the nodes before it); the rect's
    # part of it is the table (a view: remap takes a row stride)
    gh, gw = i1 - i0 + 1, j1 - j0 + 1
    store = map_buffer(buffer, box, step)
    big = store[:gh * step * gw * step * 2].reshape(gh * step, gw * step, 2)
    cv2.resize(cv2.merge([dx[i0:i1 + 1, j0:j1 + 1], dy[i0:i1 + 1, j0:j1 + 1]]), (gw * step, gh * step), dst=big,
               interpolation=cv2.INTER_LINEAR)
    return WarpMaps(big[:rh, :rw], scale, max_shift, (rx, ry, rw, rh))


def remap_rect(src: NDArray[np.uint8], maps: WarpMaps, dst: NDArray[np.uint8]) -> None:
    """Write the warped `rect` of the box `src` into the same rect of `dst` (both box-sized, not the same
    array).  The table is relative to each output pixel of the rect, so the source is read from a view
    that starts at the rect's corner: the rect's first rows and columns do not move (a still node), so no
    pixel reads before that corner."""
    rx, ry, rw, rh = maps.rect
    cv2.remap(src[ry:, rx:], maps.d, None, cv2.INTER_LINEAR | cv2.WARP_RELATIVE_MAP,
              dst=dst[ry:ry + rh, rx:rx + rw], borderMode=cv2.BORDER_REPLICATE)


def map_buffer(buffer: NDArray[np.float32] | None, box: Box, step: int = GRID) -> NDArray[np.float32]:
    """Flat float32 storage for `warp_maps` of `box`: `buffer` when it is big enough, else a new one with
    room to grow.  Keep it from frame to frame and pass it back (the table then lives in it)."""
    _x0, _y0, w, h = box
    need = 2 * (h // step + 2) * step * (w // step + 2) * step
    if buffer is None or buffer.size < need:
        buffer = np.empty(need + need // 2, np.float32)
    return buffer


@lru_cache(maxsize=4)
def _identity(w: int, h: int) -> NDArray[np.float32]:
    """(h, w, 2) pixel coordinates of a frame; a box's own are its top-left [:bh, :bw] corner."""
    grid = np.empty((h, w, 2), np.float32)
    grid[..., 0] = np.arange(w, dtype=np.float32)[None, :]
    grid[..., 1] = np.arange(h, dtype=np.float32)[:, None]
    grid.flags.writeable = False
    return grid
