"""Pixel-format negotiation for video edges: what one ring carries, chosen before any process starts.

A video output pad may declare several pixel formats it can emit (`OutPort.pix_fmts`, preferred
first: a camera prefers its decoder's `yuv420p`); every input pad declares the ones it accepts
(`InPort.pix_fmts`: the encoder takes `yuv420p` and `rgb24`, filters that work on RGB take `rgb24`).
One ring carries one format to all its consumers, so the edge gets the producer's first format that
every consumer accepts.  A node option `pix_fmt` (`auto`, `rgb24`, `yuv420p`) forces it.  No format
in common is a `FormatMismatchError` that names both ends and says what to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..sdk.errors import FormatMismatchError, OptionError
from ..sdk.formats import pix_fmt_fits

__all__ = ["Reader", "choose_pix_fmt", "emittable"]


@dataclass(frozen=True)
class Reader:
    """One consumer of a video output pad: who it is, where it is linked, what it accepts."""

    node: str
    kind: str
    pad: str
    where: str  # the link's place in the file, e.g. `nodes[2].inputs.in`
    accepts: tuple[str, ...]  # empty = any pixel format

    def takes(self, pix_fmt: str) -> bool:
        return not self.accepts or pix_fmt in self.accepts

    def describe(self) -> str:
        return f"input pad {self.pad!r} of {self.node!r} (kind {self.kind})"


def emittable(declared: Sequence[str], computed: str, forced: str, width: int, height: int, *,
              src: str, where: str) -> tuple[str, ...]:
    """The formats a producer pad may emit on this edge: its declared list (or the one format its
    `output_formats()` computed), cut to `forced` unless that is `auto` (or the pad declares no list),
    without `yuv420p` for an odd size.  A forced format the pad cannot emit is an `OptionError` at `where`."""
    emits = tuple(declared) or (computed,)
    if declared and forced and forced != "auto":  # a pad with one format has nothing to force
        if forced not in emits:
            raise OptionError(f"{src} cannot emit pix_fmt {forced!r} (it emits {'/'.join(emits)})", where=where)
        if not pix_fmt_fits(forced, width, height):
            raise OptionError(f"pix_fmt {forced!r} needs an even frame size, {src} is {width}x{height}",
                              where=where)
        return (forced,)
    fitting = tuple(p for p in emits if pix_fmt_fits(p, width, height))
    return fitting or emits


def choose_pix_fmt(src: str, emits: Sequence[str], readers: Sequence[Reader], *, forced: bool = False) -> str:
    """The first of `emits` that every reader accepts, or a FormatMismatchError naming both ends."""
    if not emits:
        raise ValueError(f"{src}: no pixel format to choose from")
    for fmt in emits:
        if all(r.takes(fmt) for r in readers):
            return fmt
    fix = (f"set {src.split('/')[0]}'s pix_fmt to auto or to a format the consumer accepts" if forced else
           "put a filter between them that takes one and gives the other (e.g. any rgb24 filter after a "
           "yuv420p source), or link a producer that emits what the consumer accepts")
    for r in readers:
        if not any(r.takes(fmt) for fmt in emits):
            raise FormatMismatchError(
                f"{src} emits pixel format {'/'.join(emits)} but {r.describe()} expects pixel format "
                f"{'/'.join(r.accepts)}: no pixel format in common; hint: {fix}", where=r.where)
    # each reader could be served alone, but not all of them by one ring
    a = next(r for r in readers if not r.takes(emits[0]))
    b = next((r for r in readers if r is not a and not any(r.takes(f) and a.takes(f) for f in emits)), readers[0])
    raise FormatMismatchError(
        f"{src} feeds {a.describe()} (accepts {'/'.join(a.accepts)}) and {b.describe()} (accepts "
        f"{'/'.join(b.accepts) or 'any'}), and one ring carries one pixel format to all its consumers: none of "
        f"{'/'.join(emits)} suits both; hint: put a converting filter in front of one of them", where=a.where)
