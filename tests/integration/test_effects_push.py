"""watermark and transform checked on what nginx-rtmp relays, decoded by PyAV (FFmpeg) from the server.

One engine pushes three streams of the same still picture (an image_source, so every source pixel is
known): `wm` with three static marks (PNG with soft alpha, JPEG, WebP with alpha at 60% opacity, the
last added live by command) and an animated GIF added live with a 2 s loop; `ta` rotated 90 degrees,
then turned to 270 live, then mirrored live; `tb` mirrored, then turned 180 live and unmirrored.  Each
picture is compared with a reference computed here with numpy (a float blend; np.rot90 / np.fliplr):
mean error <= 3 levels inside each mark, PSNR >= 35 dB for the transforms.  Refused commands (a 4th
static mark, a mark outside the frame, a path outside the assets folder) answer with their codes while
the stream goes on.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from mediaengine.sdk.errors import EngineError, InputPathError, MarkError, MarkLimitError
from PIL import Image

from tests.enginekit import Engine, wait_for
from tools.rtmp_server import RtmpServer

pytestmark = [pytest.mark.integration, pytest.mark.rtmp, pytest.mark.timeout(180)]

W, H = 480, 272
COLORS = [(230, 30, 30), (30, 200, 40), (40, 60, 230), (240, 220, 20)]  # the GIF's four frames
LOOP_S = 2.0


# ---- the pictures ---------------------------------------------------------------------------------

def source_picture() -> np.ndarray:
    """A smooth picture with large features and no symmetry (every flip and turn looks different)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    pic = np.dstack([40 + 180 * x / W, 40 + 160 * y / H, 200 - 150 * (x + y) / (W + H)])
    pic[30:110, 40:200] = (220, 220, 60)
    pic[160:250, 330:450] = (40, 40, 140)
    return np.clip(pic, 0, 255).astype(np.uint8)


def soft_logo(w: int, h: int) -> np.ndarray:
    """RGBA: a colour gradient under an alpha ramp from transparent to opaque, left to right."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rgb = np.dstack([255 * y / h, np.full_like(x, 40), 255 - 255 * y / h])
    alpha = 255 * x / (w - 1)
    return np.dstack([rgb, alpha]).round().astype(np.uint8)


MARKS = {  # id -> (file, picture at its shown size, x, y, opacity); width = picture width / W
    "logo": ("logo.png", soft_logo(96, 48), 0.75, 0.05, 1.0),
    "badge": ("badge.jpg", np.dstack([np.full((40, 48, 3), (250, 250, 250), np.uint8),
                                      np.full((40, 48), 255, np.uint8)]), 0.05, 0.75, 1.0),
    "sticker": ("sticker.webp", soft_logo(72, 36)[:, ::-1].copy(), 0.4, 0.45, 0.6),
}
ANIM = ("anim.gif", 48, 24, 0.05, 0.05)  # file, w, h, x, y


def write_assets(folder: Path) -> None:
    folder.mkdir()
    Image.fromarray(MARKS["logo"][1], "RGBA").save(folder / "logo.png")
    Image.fromarray(MARKS["badge"][1][..., :3].copy(), "RGB").save(folder / "badge.jpg", quality=98)
    Image.fromarray(MARKS["sticker"][1], "RGBA").save(folder / "sticker.webp", lossless=True)
    frames = [Image.fromarray(np.full((ANIM[2], ANIM[1], 3), c, np.uint8), "RGB") for c in COLORS]
    frames[0].save(folder / ANIM[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    cv2.imwrite(str(folder / "source.png"), cv2.cvtColor(source_picture(), cv2.COLOR_RGB2BGR))


def rect(mark: str) -> tuple[int, int, int, int]:
    _, pic, x, y, _ = MARKS[mark]
    return round(x * W), round(y * H), pic.shape[1], pic.shape[0]


def reference_blend(base: np.ndarray) -> np.ndarray:
    """The three static marks blended onto `base` in float (the exact formula), rounded."""
    out = base.astype(np.float64)
    for mark in MARKS:
        x0, y0, w, h = rect(mark)
        pic, opacity = MARKS[mark][1], MARKS[mark][4]
        a = pic[..., 3:4] / 255.0 * opacity
        out[y0:y0 + h, x0:x0 + w] = out[y0:y0 + h, x0:x0 + w] * (1 - a) + pic[..., :3] * a
    return np.rint(out).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- pulling what the server relays ---------------------------------------------------------------

class Puller:
    """Decodes one relayed stream in a thread and keeps its recent (time_s, rgb24 picture) pairs."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: list[tuple[float, np.ndarray]] = []  # the last 300 decoded
        self.decoded = 0  # frames decoded in all: `since(n)` counts on this, not on the list's length
        self.error: BaseException | None = None
        self.stopping = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            with av.open(self.url, options={"rw_timeout": "10000000"}, timeout=(20.0, 10.0)) as c:
                for frame in c.decode(video=0):
                    pic = frame.to_ndarray(format="rgb24")
                    with self.lock:
                        self.frames = [*self.frames[-299:], (float(frame.time or 0.0), pic)]
                        self.decoded += 1
                    if self.stopping:
                        return
        except BaseException as exc:  # reported by the test that waits on this puller
            self.error = exc

    def since(self, n: int) -> list[tuple[float, np.ndarray]]:
        """The frames decoded after the first `n` (those still kept)."""
        with self.lock:
            return self.frames[max(0, len(self.frames) - (self.decoded - n)):] if self.decoded > n else []

    def count(self) -> int:
        with self.lock:
            return self.decoded

    def wait_picture(self, ok: Callable[[np.ndarray], bool], what: str, timeout: float = 15.0) -> np.ndarray:
        """The first picture decoded from now on that satisfies `ok` (a change applies within frames)."""
        start = self.count()
        seen: list[np.ndarray] = []

        def found() -> list[np.ndarray] | None:
            if self.error is not None:
                raise AssertionError(f"pulling {self.url} failed: {self.error!r}")
            new = [pic for _, pic in self.since(start)]
            seen[:] = new[-1:]
            return next(([pic] for pic in new if ok(pic)), None)  # a list: an array has no truth value

        try:
            return np.array(wait_for(found, timeout, what)[0])  # a copy: the caller may paint on it
        except AssertionError as exc:
            last = f"the last picture decoded: {seen[-1].shape}" if seen else "no picture decoded"
            raise AssertionError(f"{exc} ({self.count() - start} frames since the wait began; {last})") from None

    def close(self) -> None:
        self.stopping = True
        self.thread.join(20)


def topology(tmp_path: Path, assets: Path, urls: dict[str, str]) -> Path:
    enc = "{bitrate_kbps: 3000, gop_s: 1, preset: veryfast, tune: zerolatency}"
    logo, badge = MARKS["logo"], MARKS["badge"]
    nodes = [
        f"- {{id: src, kind: image_source, options: {{path: '{assets / 'source.png'}', fps: 30}}}}",
        f"- {{id: wm, kind: watermark, inputs: {{in: src}}, options: {{assets_dir: '{assets}', marks: ["
        f"{{id: logo, path: '{assets / logo[0]}', x: {logo[2]}, y: {logo[3]}, width: {logo[1].shape[1] / W}}}, "
        f"{{id: badge, path: '{assets / badge[0]}', x: {badge[2]}, y: {badge[3]}, "
        f"width: {badge[1].shape[1] / W}}}]}}}}",
        "- {id: ta, kind: transform, inputs: {in: src}, options: {rotate: 90}}",
        "- {id: tb, kind: transform, inputs: {in: src}, options: {mirror: true}}",
    ]
    for branch in ("wm", "ta", "tb"):
        nodes += [f"- {{id: e{branch}, kind: video_encoder, inputs: {{in: {branch}}}, options: {enc}}}",
                  f"- {{id: p{branch}, kind: rtmp_sender, inputs: {{video: e{branch}}}, "
                  f"options: {{url: '{urls[branch]}'}}}}"]
    path = tmp_path / "effects.yaml"
    path.write_text("version: 1\nname: effects\nnodes:\n" + "".join(f"  {n}\n" for n in nodes))
    return path


def test_watermarks_and_transforms_on_the_relayed_stream(engine_runner: Callable[..., Engine],
                                                         rtmp_server: RtmpServer, tmp_path: Path) -> None:
    assets = tmp_path / "assets"
    write_assets(assets)
    src = source_picture()
    urls = {b: rtmp_server.url(stream=f"fx-{b}") for b in ("wm", "ta", "tb")}
    eng = engine_runner(topology(tmp_path, assets, urls))
    eng.wait_running()
    pullers = {b: Puller(u) for b, u in urls.items()}
    try:
        def command(command: str, **args: object) -> object:
            return eng.request("command", node="wm", command=command, args=args)

        sticker = MARKS["sticker"]
        command("add", id="sticker", path=sticker[0], x=sticker[2], y=sticker[3], width=sticker[1].shape[1] / W,
                opacity=sticker[4])
        command("add", id="anim", path=ANIM[0], x=ANIM[3], y=ANIM[4], width=ANIM[1] / W, loop_s=LOOP_S)
        for exc, args in [(MarkLimitError, dict(id="x", path="badge.jpg", x=0.5, y=0.1, width=0.1)),
                          (MarkError, dict(id="y", path=ANIM[0], x=0.95, y=0.1, width=0.1)),
                          (InputPathError, dict(id="z", path="../assets/logo.png", x=0.1, y=0.1, width=0.1))]:
            with pytest.raises(exc) as refused:
                command("add", **args)
            assert isinstance(refused.value, EngineError) and refused.value.code == exc.code
        wait_for(lambda: [(m["id"], m["state"]) for m in command("list")["marks"]]  # type: ignore[index]
                 == [("logo", "shown"), ("badge", "shown"), ("sticker", "shown"), ("anim", "shown")], 10,
                 "the four marks shown")

        # static marks at their place with alpha honoured, against the float reference
        ref = reference_blend(src)

        def marks_match(pic: np.ndarray) -> bool:
            errs = [np.abs(pic[y:y + h, x:x + w].astype(int) - ref[y:y + h, x:x + w]).mean()
                    for x, y, w, h in map(rect, MARKS)]
            return bool(max(errs) <= 3.0)

        pic = pullers["wm"].wait_picture(marks_match, "wm static marks")
        ax, ay = round(ANIM[3] * W), round(ANIM[4] * H)
        pic[ay:ay + ANIM[2], ax:ax + ANIM[1]] = ref[ay:ay + ANIM[2], ax:ax + ANIM[1]]  # the animated mark aside,
        assert psnr(pic, ref) >= 35.0  # the rest of the picture is the source

        # the animated mark: its colour at each decoded frame's time steps through the GIF every LOOP_S / 4
        start = pullers["wm"].count()
        wait_for(lambda: len(pullers["wm"].since(start)) >= 130, 25, "130 frames of the wm stream")
        shown = []
        for t, frame in pullers["wm"].since(start):
            rgb = frame[ay + 6:ay + ANIM[2] - 6, ax + 6:ax + ANIM[1] - 6].reshape(-1, 3).mean(axis=0)
            shown.append((t, int(np.argmin([np.abs(rgb - c).sum() for c in COLORS]))))
        changes = [(t, i) for (_, prev), (t, i) in itertools.pairwise(shown) if i != prev]
        assert len(changes) >= 4, shown
        step = LOOP_S / len(COLORS)
        for (_, i0), (_, i1) in itertools.pairwise(changes):
            assert i1 == (i0 + 1) % len(COLORS), changes  # in the GIF's order, looping
        # every LOOP_S / 4 of stream time; the median, because on a loaded machine a late frame repeated by
        # the encoder's keepalive can delay one change by a few frames (its neighbours then look shorter)
        intervals = sorted(t1 - t0 for (t0, _), (t1, _) in itertools.pairwise(changes))
        median = intervals[len(intervals) // 2]
        assert abs(median - step) <= 0.05, f"frames change every {median:.3f}s, not {step}s: {changes}"

        # transforms: pixel-exact up to the codec (PSNR >= 35 dB against numpy's flip/rot90)
        def like(reference: np.ndarray) -> Callable[[np.ndarray], bool]:
            return lambda pic: pic.shape == reference.shape and psnr(pic, reference) >= 35.0

        checks = [("ta", {}, np.rot90(src, -1)), ("ta", {"rotate": 270}, np.rot90(src, 1)),
                  ("ta", {"mirror": True}, np.rot90(np.fliplr(src), 1)), ("tb", {}, np.fliplr(src)),
                  ("tb", {"rotate": 180, "mirror": False}, np.rot90(src, 2))]
        for node, options, reference in checks:
            if options:
                eng.request("set", node=node, options=options)
            pullers[node].wait_picture(like(reference), f"{node} {options or 'at start'} at PSNR >= 35 dB")
        assert all(eng.node(n)["restarts"] == 0 for n in ("wm", "ta", "tb")), eng.log
    finally:
        eng.request("stop")
        for p in pullers.values():
            p.close()
    assert eng.wait(30) == 0, eng.log


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    x, y = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


def test_camera_preview_push_mirrors_the_preview_only_and_toggles_live(engine_runner: Callable[..., Engine],
                                                                       rtmp_server: RtmpServer, tmp_path: Path) -> None:
    """topologies/camera_preview_push.yaml as shipped (the lavfi camera at 640x360): the preview snapshot is
    the pushed picture mirrored; after `set mirror=false` on preview_fx it is the pushed picture itself."""
    url = rtmp_server.url(stream="preview-push")
    preview = tmp_path / "preview.png"
    eng = engine_runner("topologies/camera_preview_push.yaml",
                        "--set", "cam.device=lavfi:testsrc2=size=640x360:rate=30", "--set", "cam.width=640",
                        "--set", "cam.height=360", "--set", f"preview.path={preview}",
                        env={"PUSH_URL": url})
    eng.wait_running()
    wait_for(lambda: eng.node("push")["metrics"].get("actor", {}).get("state") == "connected", 20, "the push connected")
    pull = Puller(url)
    try:
        def pair() -> tuple[np.ndarray, np.ndarray]:
            """A preview snapshot taken now and the next picture the server relays after it."""
            preview.unlink(missing_ok=True)
            eng.request("command", node="preview", command="snapshot", args={})
            wait_for(preview.exists, 10, "the preview snapshot")
            n = pull.count()
            pushed = wait_for(lambda: pull.since(n)[-1:], 15, "a relayed picture")[0][1]
            return cv2.cvtColor(cv2.imread(str(preview)), cv2.COLOR_BGR2RGB), pushed

        shot, pushed = pair()
        mirrored, straight = correlation(shot, np.fliplr(pushed)), correlation(shot, pushed)
        assert mirrored > 0.7 and straight < mirrored - 0.5, (mirrored, straight)  # the moving parts differ a little
        eng.request("set", node="preview_fx", options={"mirror": False})
        shot, pushed = pair()
        mirrored, straight = correlation(shot, np.fliplr(pushed)), correlation(shot, pushed)
        assert straight > 0.7 and mirrored < straight - 0.5, (mirrored, straight)
    finally:
        eng.request("stop")
        pull.close()
    assert eng.wait(30) == 0, eng.log
