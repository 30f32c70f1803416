"""MediaPipe's face landmark model, run directly: a 192x192 face crop in, 468 landmarks and a face score out.

mediapipe 0.10.21 ships the model (`modules/face_landmark/face_landmark.tflite`) inside its wheel.  Its
face-mesh graph runs it too, but around it the graph converts the whole frame into its own image type,
crops on its own threads and keeps working after it has answered (the next crop is computed while the
caller goes on), about 1 ms more per 720p frame than the model itself (BENCHMARKS.md, beauty).  Here the
caller crops (`roi.py`) and the model runs in the calling thread:

- through LiteRT (`ai-edge-litert`, Google's TensorFlow Lite runtime; XNNPACK, one thread), which the
  `beauty` extra installs where it has wheels (Linux and macOS, Python 3.9-3.12);
- else through OpenCV's dnn module, which reads .tflite files itself (the same numbers, slower).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from mediaengine.sdk.errors import FaceModelError
from numpy.typing import NDArray

__all__ = ["INPUT", "POINTS", "LandmarkModel", "mediapipe_missing", "model_file"]

#: the model's input side in pixels
INPUT = 192
#: landmarks the model gives (x, y, z each, in crop pixels)
POINTS = 468


def mediapipe_missing(exc: BaseException) -> FaceModelError:
    """The error for a mediapipe that does not import (not installed, or a broken install: protobuf, the
    numpy ABI), saying what to do."""
    return FaceModelError(f"the beauty filter needs mediapipe 0.10.21 ({type(exc).__name__}: {exc}): "
                          "pip install 'mediaengine[beauty]' (Python 3.9-3.12)")


def model_file(name: str = "face_landmark/face_landmark.tflite") -> Path:
    """The model file inside the installed mediapipe package, or FaceModelError saying how to get it."""
    try:
        import mediapipe
    except Exception as exc:
        raise mediapipe_missing(exc) from exc
    path = Path(mediapipe.__file__).parent / "modules" / name
    if not path.is_file():
        raise FaceModelError(f"mediapipe's face model {path} is missing: the beauty filter needs mediapipe "
                             "0.10.21, the last release that ships it (pip install 'mediaengine[beauty]')")
    return path


class LandmarkModel:
    """`run(crop)` -> (landmarks (468, 2) in crop pixels, face score 0..1) for one rgb24 192x192 crop."""

    def __init__(self, path: Path | None = None, runtime: str = "auto") -> None:
        """`runtime`: "litert", "opencv", or "auto" (LiteRT when it is installed)."""
        self.path = path or model_file()
        self._input = np.empty((1, INPUT, INPUT, 3), np.float32)
        self._run: Any
        if runtime not in ("auto", "litert", "opencv"):
            raise ValueError(f"unknown runtime {runtime!r}: litert, opencv or auto")
        failed: FaceModelError | None = None
        if runtime in ("auto", "litert"):
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                if runtime == "litert":
                    raise
            else:
                try:
                    self._run = self._litert(Interpreter)
                    self.runtime = "litert"
                    return
                except FaceModelError as exc:  # "auto": OpenCV may still read the file
                    if runtime == "litert":
                        raise
                    failed = exc
        self.runtime = "opencv"
        try:
            self._run = self._opencv()
        except FaceModelError as exc:
            raise FaceModelError(f"{exc}; and {failed}" if failed else str(exc)) from exc

    def _litert(self, interpreter: Any) -> Any:
        try:
            it = interpreter(model_path=str(self.path), num_threads=1)
            it.allocate_tensors()
        except Exception as exc:
            raise FaceModelError(f"LiteRT could not load {self.path}: {type(exc).__name__}: {exc}") from exc
        index = it.get_input_details()[0]["index"]
        outputs = {int(np.prod(d["shape"])): d["index"] for d in it.get_output_details()}
        points, flag = outputs[POINTS * 3], outputs[1]

        def run(x: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
            it.set_tensor(index, x)
            it.invoke()
            return it.get_tensor(points).reshape(POINTS, 3), float(it.get_tensor(flag).ravel()[0])
        return run

    def _opencv(self) -> Any:
        try:
            net = cv2.dnn.readNetFromTFLite(str(self.path))
        except cv2.error as exc:
            raise FaceModelError(f"OpenCV could not load {self.path}: {exc}") from exc
        names = net.getUnconnectedOutLayersNames()

        def run(x: NDArray[np.float32]) -> tuple[NDArray[np.float32], float]:
            net.setInput(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))  # OpenCV's dnn takes NCHW
            outs = sorted(net.forward(names), key=lambda a: a.size)
            points: NDArray[np.float32] = np.asarray(outs[1], np.float32).reshape(POINTS, 3)
            return points, float(outs[0].ravel()[0])
        return run

    def run(self, crop: NDArray[np.uint8]) -> tuple[NDArray[np.float32], float]:
        """Landmarks (x, y) in crop pixels and the probability that the crop holds a face."""
        np.multiply(crop, np.float32(1.0 / 255.0), out=self._input[0])  # the model takes 0..1
        points, logit = self._run(self._input)
        return points[:, :2], 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))
