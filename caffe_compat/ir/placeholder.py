"""Input shapes a net leaves to run time, and the shape a user most likely wants instead.

Published deploy nets often declare no input shape, or a placeholder their own tool replaces
at run time (OpenPose's ``input_dim: 1 3 1 1``, "defined at runtime"). Shape inference then
fails far from the cause (a pooling window larger than its 1x1 input). The error should say
what to pass: ``--input-shape NAME=N,C,H,W``, with the shape such nets are usually run at where
the net's name or file name tells what it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .graph import Shape

# (pattern over the net's name and file name, lower case; H, W; channels) in order: the first
# match wins. Sizes are the ones each family's own demo or paper runs at.
_TYPICAL: tuple[tuple[str, int, int, int], ...] = (
    (r"openpose|pose_deploy|pose_iter", 368, 368, 3),  # OpenPose's net_resolution -1x368
    (r"faceboxes", 1024, 1024, 3),
    (r"retinaface|(?<![a-z])mnet", 640, 640, 3),
    (r"ssd.?512", 512, 512, 3),
    (r"ssd|textboxes", 300, 300, 3),
    (r"yolo", 416, 416, 3),
    (r"pspnet", 473, 473, 3),
    (r"segnet", 360, 480, 3),
    (r"(?<![a-z])enet", 512, 1024, 3),
    (r"(?<![a-z])hed(?![a-z])|fcn", 500, 500, 3),
    (r"inception.?v[34]|inception.?resnet|xception", 299, 299, 3),
    (r"alexnet|caffenet|squeezenet", 227, 227, 3),
    (r"lenet|mnist", 28, 28, 1),
    (r"cifar", 32, 32, 3),
    (
        r"vgg|resnet|resnext|googlenet|inception|densenet|mobilenet|shufflenet|senet|se-|dpn"
        r"|places|squeeze",
        224,
        224,
        3,
    ),
)
# Square sides tried in turn where a net's shape rules refuse its family's usual size (a
# multi-scale net whose branches realign only at some sizes: DeepLab-ResNet's 321 or 513).
FALLBACK_SIDES = (224, 227, 256, 299, 300, 320, 321, 368, 384, 416, 448, 473, 500, 512, 513)
_SIZE = re.compile(r"(?<!\d)(\d{2,4})x(\d{2,4})(?!\d)")


def is_placeholder(shape: Shape | None) -> bool:
    """No shape, or an image input whose height and width are both 1 (a run-time placeholder)."""
    return shape is None or (len(shape) == 4 and shape[2] == 1 and shape[3] == 1)


def typical_shape(names: str, declared: Shape | None = None) -> Shape | None:
    """The N,C,H,W a net called ``names`` (its name and file name) usually runs at, or None.

    A size written as ``300x300`` in the names wins; otherwise the family's usual size. N and C
    come from the declared shape where it has them."""
    text = names.lower()
    batch = declared[0] if declared and len(declared) == 4 else 1
    channels = declared[1] if declared and len(declared) == 4 else None
    found = _SIZE.search(text)
    if found:
        return (batch, channels or 3, int(found.group(1)), int(found.group(2)))
    for pattern, height, width, usual in _TYPICAL:
        if re.search(pattern, text):
            return (batch, channels or usual, height, width)
    return None


def placeholder_hint(name: str, declared: Shape | None, names: str) -> str:
    """Words for an error about input ``name``: what it declares and what to pass instead."""
    if declared is None:
        hint = f'input "{name}" has no declared shape'
    else:
        hint = f'input "{name}" is declared {"x".join(map(str, declared))}, a placeholder'
        hint += " its own tool fills at run time"
    typical = typical_shape(names, declared)
    if typical is not None:
        hint += f" (nets like this one usually run at {','.join(map(str, typical))})"
    return hint


def assumed_shapes(
    inputs: Mapping[str, Shape | None], failed: bool, names: str, given: Mapping[str, Shape]
) -> dict[str, Shape]:
    """Typical shapes for the inputs a caller asked to be filled in (``typical_input_shapes``):
    each input without a shape, and each 1x1 placeholder where the net's shape rules ``failed``
    at it (a net that runs at 1x1, as Caffe would run it, keeps it). Inputs the caller gave a
    shape, and those whose family the names do not tell, are left alone (still refused)."""
    found: dict[str, Shape] = {}
    for name, shape in inputs.items():
        if name in given or not is_placeholder(shape) or (shape is not None and not failed):
            continue
        typical = typical_shape(names, shape)
        if typical is not None:
            found[name] = typical
    return found


def assumed_note(name: str, declared: Shape | None, shape: Shape) -> str:
    """The line every report carries for an input run at an assumed shape: never silent."""
    what = (
        "has no declared shape"
        if declared is None
        else (f"is declared {'x'.join(map(str, declared))}, a placeholder")
    )
    return (
        f'input "{name}" {what}: running at {",".join(map(str, shape))}, the size nets like this '
        "one usually run at (typical input shapes were asked for); give its shape to run at "
        "another"
    )
