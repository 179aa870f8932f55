"""``readNetFromCaffe`` and ``readNet`` as OpenCV spells them, on OpenCV 4 and 5 alike.

OpenCV 5 has no Caffe reader: the net is converted to ONNX (cached, see ``cache``) and loaded with
``cv2.dnn.readNetFromONNX``. OpenCV 4 reads Caffe itself and gets the files handed over, unless
the net has a layer OpenCV 4 is known to compute differently from Caffe (LRN with k != 1, Log
with a base, ...: each layer type's ``opencv_deviation`` fact), in which case our ONNX is used
there too.

Errors: missing or unreadable files raise :class:`caffe_compat.errors.CaffeCompatError`, one line
naming the file, also when OpenCV's own reader is the one that failed (its ``cv2.error`` is
several lines from deep inside OpenCV, and tutorials rarely catch it). Code that catches
``cv2.error`` around ``readNetFromCaffe`` should catch ``CaffeCompatError`` too.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaffeCompatError, FileFormatError
from .names import NetNames
from .net import ConvertedNet

CAFFE_EXTENSIONS = ("prototxt", "caffemodel")


class OpenCvRejectedError(CaffeCompatError):
    """OpenCV could not load a net (its own reader, or our ONNX conversion)."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError:
        raise CaffeCompatError(
            "caffe_compat.dnn needs OpenCV: pip install opencv-python-headless"
        ) from None
    return cv2


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _extension(value: Any) -> str:
    return Path(os.fspath(value)).suffix[1:].lower() if _is_path(value) else ""


def _existing(path: str | os.PathLike[str], what: str) -> Path:
    found = Path(path)
    if not found.is_file():
        problem = "is a folder" if found.is_dir() else "no such file"
        raise CaffeCompatError(f"{problem}: expected {what}", path=str(found))
    return found


def _reason(exc: Exception) -> str:
    """The messages inside a multi-line cv2.error, without OpenCV's source locations."""
    text = re.sub(r"OpenCV\([^)]*\) \S+:\d+: error: \([^)]*\) ?", "", str(exc))
    text = re.sub(r" ?in function '[^']*'", "", text).replace(">", " ")
    return " ".join(text.split()) or type(exc).__name__


def opencv_deviations(prototxt: str | os.PathLike[str]) -> list[str]:
    """Why OpenCV 4's Caffe reader would compute other numbers than Caffe for this net (layer
    named in each reason); empty when it computes the same function."""
    from ..ir.load import load_net
    from ..verify.opencv import opencv_known_deviations

    return sorted(set(opencv_known_deviations(load_net(prototxt).graph).values()))


def _opencv_caffe(cv2: Any, prototxt: Any, weights: Any) -> Any:
    """OpenCV's own Caffe reader (4.x), its errors as one line."""
    args = [os.fspath(a) if _is_path(a) else a for a in (prototxt, weights) if a is not None]
    try:
        return cv2.dnn.readNetFromCaffe(*args)
    except cv2.error as exc:
        files = " + ".join(Path(a).name for a in args if isinstance(a, str)) or "buffers"
        raise OpenCvRejectedError(
            f"OpenCV's Caffe reader failed on {files}: {_reason(exc)}"
        ) from None


def _read_onnx(cv2: Any, data: bytes, source: str) -> Any:
    # A numpy buffer, not bytes: OpenCV 5.0.0's readNetFromONNX(bytes) crashes (measured).
    try:
        net = cv2.dnn.readNetFromONNX(np.frombuffer(data, dtype=np.uint8))
    except cv2.error as exc:
        raise OpenCvRejectedError(
            f"OpenCV {cv2.__version__} cannot load the ONNX conversion: {_reason(exc)}",
            path=source,
        ) from None
    if net.empty():
        raise OpenCvRejectedError(
            f"OpenCV {cv2.__version__} loaded an empty net from the ONNX conversion", path=source
        )
    return net


def _converted(cv2: Any, prototxt: Path, weights: Path | None) -> ConvertedNet:
    """The net converted to ONNX (cached by the files' identities) in OpenCV; a net whose
    weights file lacks layers (or that has none) waits for them: its first forward converts."""
    from .cache import cached_conversion
    from .model import WeightsPending, load_editable

    source = str(weights or prototxt)

    def reader(data: bytes) -> Any:
        return _read_onnx(cv2, data, source)

    def editable() -> Any:
        return load_editable(prototxt, weights)

    try:
        if weights is None:
            raise WeightsPending(load_editable(prototxt, None))
        converted, _ = cached_conversion(prototxt, weights)
    except WeightsPending as pending:
        loaded = pending.loaded
        names = NetNames.from_graph(loaded.graph)
        return ConvertedNet(None, names, reader, editable=lambda: loaded, source=source)
    net = reader(converted.onnx)
    return ConvertedNet(
        net, converted.names, reader, onnx=converted.onnx, editable=editable, source=source
    )


def _check_kinds(prototxt: Any, weights: Any) -> None:
    """The swapped-files and wrong-file answers first, whatever the files' sizes (OpenCV's
    reader would only say it failed to parse)."""
    from ..io.prototxt import read_text
    from ..io.sniff import Kind, explain, sniff
    from ..io.source import open_regular

    if _is_path(prototxt) and os.fspath(prototxt):
        read_text(_existing(prototxt, "a net definition (.prototxt)"))
    if not _is_path(weights):
        return
    found = _existing(weights, "the net's weights (.caffemodel)")
    fd, _ = open_regular(found)
    with os.fdopen(fd, "rb") as handle:
        head = handle.read(4096)
    kind = sniff(head)
    problem = explain(kind, head, "binary caffemodel")
    if problem is None and kind is Kind.TEXT:
        problem = (
            "this is a text file, not a binary caffemodel: did you swap the prototxt and the "
            "weights arguments?"
        )
    if problem:
        raise FileFormatError(problem, path=str(found))


def readNetFromCaffe(prototxt: Any, caffeModel: Any = None, *, convert: bool | None = None) -> Any:
    """``cv2.dnn.readNetFromCaffe(prototxt, caffeModel)`` for OpenCV 4 and 5.

    Returns OpenCV 4's own ``cv2.dnn.Net`` when it computes what Caffe computes, else a
    :class:`ConvertedNet` running our ONNX conversion (always on OpenCV 5). ``convert=True``
    always converts; ``convert=False`` always uses OpenCV's reader (OpenCV 4 only). The
    prototxt alone is accepted, as by OpenCV: set the weights with ``getLayer(name).blobs`` or
    ``setParam`` before the first forward (a weights file lacking layers works the same way).
    """
    cv2 = _cv2()
    native = hasattr(cv2.dnn, "readNetFromCaffe")
    if convert is False and not native:
        raise CaffeCompatError(f"OpenCV {cv2.__version__} has no Caffe reader; convert=False")
    if caffeModel is None or (isinstance(caffeModel, str) and not caffeModel):
        caffeModel = None
    paths = _is_path(prototxt) and (caffeModel is None or _is_path(caffeModel))
    if paths:
        _check_kinds(prototxt, caffeModel)
    if native and convert is not True and (not paths or caffeModel is None):
        return _opencv_caffe(cv2, prototxt, caffeModel)  # buffers, or a net without weights
    if not paths:
        raise CaffeCompatError(
            "caffe_compat.dnn converts files: pass the .prototxt and .caffemodel paths"
        )
    if not os.fspath(prototxt):
        raise CaffeCompatError("a Caffe net needs its net definition (.prototxt); none given")
    definition = _existing(prototxt, "a net definition (.prototxt)")
    weights = None if caffeModel is None else _existing(caffeModel, "the net's weights")
    if not native or convert or weights is None:
        return _converted(cv2, definition, weights)
    if convert is False:
        return _opencv_caffe(cv2, definition, weights)
    return _opencv4_or_converted(cv2, definition, weights)


def _opencv4_or_converted(cv2: Any, prototxt: Path, weights: Path) -> Any:
    """OpenCV 4's reader unless it deviates from Caffe on this net; then the conversion, or,
    when OpenCV cannot load that, its own reader again with a warning naming the deviation."""
    try:
        deviations = opencv_deviations(prototxt)
    except CaffeCompatError as ours:
        try:  # OpenCV may read what we cannot (custom layers registered with OpenCV)
            return _opencv_caffe(cv2, prototxt, weights)
        except OpenCvRejectedError:
            raise ours from None
    if not deviations:
        return _opencv_caffe(cv2, prototxt, weights)
    try:
        return _converted(cv2, prototxt, weights)
    except OpenCvRejectedError as exc:
        warnings.warn(
            f"{exc}; using OpenCV's Caffe reader, which differs from Caffe here: "
            + "; ".join(deviations),
            RuntimeWarning,
            stacklevel=3,
        )
        return _opencv_caffe(cv2, prototxt, weights)


def readNet(model: Any, config: Any = "", framework: Any = "", *args: Any, **kwargs: Any) -> Any:
    """``cv2.dnn.readNet``: a ``.prototxt`` + ``.caffemodel`` pair (either order, or
    ``framework="caffe"``) goes to :func:`readNetFromCaffe` (further arguments, such as OpenCV
    5's ``engine``, are not used for it); everything else to ``cv2.dnn.readNet`` unchanged."""
    extensions = (_extension(model), _extension(config))
    is_caffe = (isinstance(framework, str) and framework.lower() == "caffe") or any(
        ext in CAFFE_EXTENSIONS for ext in extensions
    )
    if _is_path(model) and is_caffe:  # OpenCV 5's engine argument does not apply to Caffe
        if extensions[0] == "prototxt" or extensions[1] == "caffemodel":
            model, config = config, model  # OpenCV's rule: the order does not matter
        return readNetFromCaffe(config, model or None)
    given = [model, config, framework, *args]
    while len(given) > 1 and isinstance(given[-1], str) and not given[-1]:
        given.pop()  # OpenCV's defaults, so both 4.x's and 5.x's signatures accept the call
    return _cv2().dnn.readNet(*given, **kwargs)
