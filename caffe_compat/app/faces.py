"""Faces in photos: find them (OpenCV's Haar cascade, or a converted SSD detector) and cut them out.

Boxes are ``(x, y, w, h)`` in integer pixels of the photo as decoded (EXIF orientation applied).
The classifier sees more than the detector's tight box: ``expand_box`` adds a margin on every
side, because the Levi-Hassner nets were trained on Adience's aligned faces, which include the
hair, ears and chin that a frontal-face detector cuts off.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaffeCompatError

Box = tuple[int, int, int, int]

# 0.4 of the box width/height on each side, the margin common age/gender demos add around a
# detector's tight box (it brings the crop close to Adience's aligned-face framing).
DEFAULT_MARGIN = 0.4
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
# Means and input size of OpenCV's res10_300x300 SSD face detector (BGR, 0..255).
SSD_MEAN = (104.0, 177.0, 123.0)
SSD_CONFIDENCE = 0.5
ZOO_DETECTOR = "res10_300x300_ssd"  # the zoo card of the SSD face detector
DETECTOR_NAMES = ("haar", "ssd")


@dataclass(frozen=True)
class Detection:
    """One face: its box in the photo, and the detector's confidence when it gives one."""

    box: Box
    score: float | None = None


# What finds faces: a photo (H x W x 3 BGR) in, its faces out. (pycaffe's ``Detector`` is Caffe's
# R-CNN window classifier, another thing.)
FaceDetector = Callable[[np.ndarray], list[Detection]]


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = list(getattr(image, "shape", []))
        raise CaffeCompatError(f"expected an H x W x 3 BGR image, got shape {shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise CaffeCompatError("the image is empty")
    return image


@cache
def _cascade(path: str) -> Any:
    import cv2

    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise CaffeCompatError("OpenCV could not load its face cascade", path=path)
    return classifier


def haar_available() -> str | None:
    """None when OpenCV's Haar frontal-face cascade can run here, else why not (one line)."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed"
    folder = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or not folder:
        return (
            f"OpenCV {cv2.__version__} has no Haar cascades (OpenCV 5 removed "
            "CascadeClassifier and its files)"
        )
    if not (Path(folder) / HAAR_CASCADE).is_file():
        return f"OpenCV {cv2.__version__}'s cv2.data.haarcascades lacks {HAAR_CASCADE}"
    return None


def haar_cascade_path() -> Path:
    """The frontal-face cascade that ships inside OpenCV 4's wheels (``cv2.data``)."""
    why_not = haar_available()
    if why_not is not None:
        raise CaffeCompatError(f"{why_not}; use the SSD face detector (detector 'ssd') instead")
    import cv2

    return Path(cv2.data.haarcascades) / HAAR_CASCADE


class HaarDetector:
    """OpenCV's Viola-Jones frontal-face cascade: no weights to fetch, fast on a CPU.

    ``scale_factor`` 1.1 and ``min_neighbors`` 5 are OpenCV's tutorial values: fewer neighbours
    find more faces and more false ones. ``min_size`` is in pixels of the image the cascade sees:
    photos whose longer side exceeds ``max_side`` are shrunk to it first (detection time grows
    with the pixel count; faces smaller than ``min_size`` there are not found), and the boxes are
    scaled back to the photo.
    """

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size: int = 30,
        max_side: int = 1280,
        cascade: str | os.PathLike[str] | None = None,
    ) -> None:
        if scale_factor <= 1.0:
            raise CaffeCompatError(f"scale_factor must be above 1, got {scale_factor}")
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size = min_size
        self.max_side = max_side
        self.cascade = str(cascade) if cascade is not None else str(haar_cascade_path())
        _cascade(self.cascade)  # fail now, not on the first photo

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import cv2

        image = _check_image(image)
        height, width = image.shape[:2]
        scale = min(1.0, self.max_side / max(height, width))
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        gray = cv2.equalizeHist(gray)
        found = _cascade(self.cascade).detectMultiScale(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
        )
        boxes = [
            _clip_box(
                round(x / scale),
                round(y / scale),
                round(w / scale),
                round(h / scale),
                width,
                height,
            )
            for x, y, w, h in np.asarray(found, dtype=np.int64).reshape(-1, 4)
        ]
        return [Detection(box) for box in sorted(b for b in boxes if b is not None)]


def _clip_box(x: int, y: int, w: int, h: int, width: int, height: int) -> Box | None:
    x0, y0 = max(0, min(x, width)), max(0, min(y, height))
    x1, y1 = max(0, min(x + w, width)), max(0, min(y + h, height))
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def parse_ssd_output(
    rows: np.ndarray, width: int, height: int, confidence: float = SSD_CONFIDENCE
) -> list[Detection]:
    """Caffe SSD ``DetectionOutput`` rows ``[image_id, label, score, x1, y1, x2, y2]`` (corners
    normalised to 0..1) -> boxes in a ``width`` x ``height`` photo, best first.

    Rows below ``confidence`` go, as do Caffe's ``-1`` filler rows (no detections); corners are
    clamped to the photo, as SSD boxes may reach past it.
    """
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 7)
    rows = rows[(rows[:, 0] >= 0) & (rows[:, 2] >= confidence)]
    rows = rows[np.argsort(-rows[:, 2], kind="stable")]
    found = []
    for _, _, score, x1, y1, x2, y2 in rows:
        left, top = (
            round(float(np.clip(x1, 0, 1)) * width),
            round(float(np.clip(y1, 0, 1)) * height),
        )
        right = round(float(np.clip(x2, 0, 1)) * width)
        bottom = round(float(np.clip(y2, 0, 1)) * height)
        box = _clip_box(left, top, right - left, bottom - top, width, height)
        if box is not None:
            found.append(Detection(box, float(score)))
    return found


class SSDDetector:
    """A converted Caffe SSD face detector (the res10 300x300 kind): an ``.onnx`` file of ours, or
    a prototxt and caffemodel converted in memory (any layer types the registry supports).

    Input: the photo resized to the net's input size, BGR 0..255 minus ``mean``; output: the
    ``DetectionOutput`` blob, 1 x 1 x N x 7. ``backend`` picks how a prototxt runs: ``torch``
    (CaffeNet) or ``onnx`` (ONNX Runtime).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        weights: str | os.PathLike[str] | None = None,
        *,
        confidence: float = SSD_CONFIDENCE,
        mean: Sequence[float] = SSD_MEAN,
        backend: str = "onnx",
        device: str = "cpu",
        runner: Any = None,
    ) -> None:
        from .runners import load_runner

        if not 0.0 <= confidence <= 1.0:
            raise CaffeCompatError(f"detector confidence must be in 0..1, got {confidence}")
        self.confidence = confidence
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3)
        # an .onnx file always runs on ONNX Runtime; a prototxt on the chosen back end
        self.runner = runner or load_runner(
            model, weights, backend=backend if weights is not None else "onnx", device=device
        )
        size = self.runner.input_hw or (300, 300)
        self.height, self.width = size

    def __call__(self, image: np.ndarray) -> list[Detection]:
        import cv2

        image = _check_image(image)
        resized = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_LINEAR)
        blob = (resized.astype(np.float32) - self.mean).transpose(2, 0, 1)[None]
        rows = self.runner(np.ascontiguousarray(blob))
        if rows.shape[-1] != 7:
            raise CaffeCompatError(
                f"the detector's output has shape {list(rows.shape)}; expected N x 7 rows "
                "[image_id, label, score, x1, y1, x2, y2] (a Caffe SSD DetectionOutput)",
                path=self.runner.source,
            )
        return parse_ssd_output(rows, image.shape[1], image.shape[0], self.confidence)


def zoo_ssd_detector(
    *,
    confidence: float = SSD_CONFIDENCE,
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = True,
) -> SSDDetector:
    """The zoo's res10 300x300 SSD face detector (its genuine, identity-checked weights),
    converted by our converter and run in ONNX Runtime: what works with any OpenCV."""
    from ..zoo import load_card
    from .pretrained import load_pretrained
    from .runners import onnx_runner

    card = load_card(ZOO_DETECTOR)
    model = load_pretrained(
        card,
        backend="onnx",
        device=device,
        cache_dir=cache_dir,
        download=download,
        progress=progress,
    )
    source = f"{card.name} (zoo, released weights)"
    runner = onnx_runner(model.SerializeToString(), card.output, source, device)
    mean = card.mean_values or SSD_MEAN
    return SSDDetector(source, confidence=confidence, mean=mean, device=device, runner=runner)


def make_detector(
    spec: FaceDetector | str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None,
    *,
    confidence: float = SSD_CONFIDENCE,
    backend: str = "onnx",
    device: str = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    progress: bool = True,
) -> FaceDetector:
    """``None``: OpenCV's Haar cascade where OpenCV has it (4.x), else the zoo's SSD face
    detector; ``"haar"`` or ``"ssd"`` to choose; a callable: used as is; ``MODEL.onnx`` or
    ``(PROTOTXT, CAFFEMODEL)``: an ``SSDDetector`` of those files."""
    if isinstance(spec, (list, tuple)) and len(spec) == 1 and spec[0] in DETECTOR_NAMES:
        spec = spec[0]
    if spec is None:
        spec = "haar" if haar_available() is None else "ssd"
    if isinstance(spec, str) and spec == "haar":
        return HaarDetector()
    if isinstance(spec, str) and spec == "ssd":
        return zoo_ssd_detector(
            confidence=confidence,
            device=device,
            cache_dir=cache_dir,
            download=download,
            progress=progress,
        )
    if callable(spec):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        return SSDDetector(spec, confidence=confidence, backend=backend, device=device)
    parts = list(spec)
    if len(parts) == 1:
        return SSDDetector(parts[0], confidence=confidence, backend=backend, device=device)
    if len(parts) == 2:
        return SSDDetector(
            parts[0], parts[1], confidence=confidence, backend=backend, device=device
        )
    raise CaffeCompatError(
        f"a detector is MODEL.onnx or PROTOTXT CAFFEMODEL, got {len(parts)} paths"
    )


def locate(
    image: np.ndarray, detector: FaceDetector | None, margin: float
) -> list[tuple[Detection, Box]]:
    """The faces of a photo and the region of each the nets see: every box ``detector`` finds,
    grown by ``margin`` (``expand_box``); ``detector`` None: the whole photo is one face."""
    height, width = image.shape[:2]
    if detector is None:
        whole = (0, 0, width, height)
        return [(Detection(whole), whole)]
    return [(d, expand_box(d.box, margin, width, height)) for d in detector(image)]


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """``box`` grown by ``margin`` times its width (height) on the left and right (top and
    bottom), clamped to the ``width`` x ``height`` photo."""
    if margin < 0:
        raise CaffeCompatError(f"margin must be 0 or more, got {margin}")
    x, y, w, h = box
    dx, dy = round(w * margin), round(h * margin)
    clipped = _clip_box(x - dx, y - dy, w + 2 * dx, h + 2 * dy, width, height)
    if clipped is None:
        raise CaffeCompatError(f"box {box} lies outside the {width}x{height} image")
    return clipped


def cut(image: np.ndarray, box: Box) -> np.ndarray:
    """The pixels of ``box`` (a view, no copy)."""
    x, y, w, h = box
    return image[y : y + h, x : x + w]
