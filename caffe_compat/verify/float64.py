"""The float64 judge: ``caffe_compat.reference``, Caffe's layers transcribed in numpy and computed
in float64, sharing no code with the PyTorch and ONNX back ends. It runs wherever numpy does,
so every install has an independent judge (OpenCV 4 and stored real-Caffe arrays are the
cross-checks where present)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..errors import CaffeCompatError, MemoryBudgetError
from ..ir.load import LoadedNet
from .spill import FLOAT32_MAX, SpilledValues

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
    spill: SpilledValues | None = None,
    resume: Mapping[str, np.ndarray] | None = None,
) -> tuple[Mapping[str, np.ndarray] | None, str]:
    """The reference's value for each of ``values`` and a status line; when it cannot run (a
    layer or setting it does not support, a batch over the memory budget) the reason, or the
    one-line error itself when the caller asked for this judge by name. ``spill``: each value
    goes to that store as it is computed (streamed mode), and the store is what is returned;
    over its memory there, the MemoryBudgetError itself.
    ``resume``: the judge's own values, from which a rerun with ``fixed`` values starts at the
    first layer making one (``reference.forward``); only the values from there on come back."""
    from ..reference import forward

    options: dict = {} if max_memory is None else {"max_memory": max_memory}
    if fixed:
        options["fixed"] = fixed  # values taken as given (verify/ties.py)
    if spill is not None:
        options["sink"] = spill.put
    if resume is not None and fixed:
        options["resume"] = resume
    try:
        found = forward(loaded, feeds, outputs=values, **options)
    except CaffeCompatError as exc:
        # streamed, the judge is the only one: its memory is the verification's (which then
        # tries a smaller size)
        if required or (spill is not None and isinstance(exc, MemoryBudgetError)):
            raise
        where = f'layer "{exc.layer}": ' if exc.layer is not None else ""
        return None, f"skipped: {where}{exc.reason}"
    if spill is not None:
        return spill, DESCRIPTION
    return {v: found[v] for v in values if v in found}, DESCRIPTION


def as_float32(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The judge's values as verify keeps them while the back ends run: float64 values whose
    magnitudes float32 holds are rounded to float32, in place, one value at a time (half the
    memory; the judge itself still computed in float64). Rounding moves a value by at most
    2^-24 of itself, 1/1,600 of the tightest relative tolerance (1e-4), so no verdict turns
    on it; a value beyond float32's range, holding inf or nan, or not float64 is kept as it is."""
    for name, array in values.items():
        if isinstance(array, np.ndarray) and array.dtype == np.float64 and array.size:
            largest = max(float(np.max(array)), -float(np.min(array)))  # nan: not below
            if largest < FLOAT32_MAX:
                values[name] = array.astype(np.float32)
    return values
