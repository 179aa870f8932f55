"""The pixel limit on photos, enforced where the pixels are decoded.

Two guards, because a photo is a file someone else made:

- ``check_pixels``: the size the image's header declares, read as its decoder reads it
  (``image_size``), against the limit, before OpenCV allocates the bitmap;
- ``opencv_pixel_limit``: OpenCV's own ``OPENCV_IO_MAX_IMAGE_PIXELS``, which every OpenCV 4 and 5
  decoder honours (``validateInputImageSize``, after the header, before the allocation). OpenCV
  reads that variable once, when its library is loaded (``import cv2``): setting it later does
  nothing, and no decode call takes a per-call limit. So it is set for the length of a command,
  restored after, and takes effect when cv2 is first imported inside that scope: the CLI does
  that (it owns its process), and worker processes get it in their environment
  (``images.opencv_pixel_limit_env``). Library calls in someone else's process rely on the
  header check alone: changing OpenCV's limit there would change it for their code too.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from ..errors import CaffeCompatError
from .image_size import Size, image_size

OPENCV_VARIABLE = "OPENCV_IO_MAX_IMAGE_PIXELS"


def check_pixels(kind: str, data: bytes, path: str, max_pixels: int) -> Size:
    """The (width, height) the header of ``data`` (an image of ``kind``) declares; a one-line
    ``CaffeCompatError`` naming ``path`` when there is none or it is over ``max_pixels``."""
    size = image_size(kind, data)
    if size is None:
        raise CaffeCompatError(
            f"corrupt or unsupported {kind} image (its header gives no size to check before "
            "decoding)",
            path=path,
        )
    width, height = size
    if width * height > max_pixels:
        raise CaffeCompatError(
            f"{kind} image of {width} x {height} = {width * height:,} pixels, over the "
            f"{max_pixels:,}-pixel limit",
            path=path,
        )
    return size


@contextlib.contextmanager
def opencv_pixel_limit(max_pixels: int) -> Iterator[bool]:
    """Within the block, ``OPENCV_IO_MAX_IMAGE_PIXELS`` is at most ``max_pixels`` (a lower
    value already set is kept); restored after. Yields whether it can take effect, i.e. cv2
    was not loaded yet (OpenCV reads the variable once, at load)."""
    previous = os.environ.get(OPENCV_VARIABLE)
    value = int(max_pixels)
    if previous is not None and previous.strip().isdigit():
        value = min(value, int(previous))
    os.environ[OPENCV_VARIABLE] = str(value)
    try:
        yield "cv2" not in sys.modules
    finally:
        if previous is None:
            os.environ.pop(OPENCV_VARIABLE, None)
        else:
            os.environ[OPENCV_VARIABLE] = previous
