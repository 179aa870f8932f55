"""The float64 judge: ``caffe_compat.reference``, Caffe's layers transcribed in numpy and computed
in float64, sharing no code with the PyTorch and ONNX back ends. It runs wherever numpy does,
so every install has an independent judge (OpenCV 4 and stored real-Caffe arrays are the
cross-checks where present)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import CaffeCompatError
from ..ir.load import LoadedNet

NAME = "float64"
DESCRIPTION = (
    "caffe_compat.reference: Caffe's layers in numpy float64, independent of the PyTorch and "
    "ONNX back ends"
)


def float64_judge(
    loaded: LoadedNet,
    feeds: Mapping[str, np.ndarray],
    values: list[str],
    *,
    required: bool,
    max_memory: int | None = None,
    fixed: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray] | None, str]:
    """The reference's value for each of ``values`` and a status line; when it cannot run (a
    layer or setting it does not support, a batch over the memory budget) the reason, or the
    one-line error itself when the caller asked for this judge by name."""
    from ..reference import forward

    options: dict = {} if max_memory is None else {"max_memory": max_memory}
    if fixed:
        options["fixed"] = fixed  # values taken as given (verify/ties.py)
    try:
        found = forward(loaded, feeds, outputs=values, **options)
    except CaffeCompatError as exc:
        if required:
            raise
        return None, f"skipped: {exc.reason}"
    return {v: found[v] for v in values if v in found}, DESCRIPTION
