"""The one place that opens ONNX Runtime sessions: quiet logs, provider choice, one-line errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...errors import CaffeCompatError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def cuda_available() -> bool:
    """Whether this ONNX Runtime build has the CUDA execution provider."""
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return CUDA in ort.get_available_providers()


def providers_for(device: str) -> list[str]:
    """CUDA first on a ``cuda`` device when the provider exists, the CPU always as fallback."""
    return [CUDA, CPU] if device.startswith("cuda") and cuda_available() else [CPU]


def session(
    model: bytes | str,
    *,
    providers: Sequence[str] = (CPU,),
    source: str | None = None,
    threads: int | None = None,
    lean: bool = False,
) -> Any:
    """An ``onnxruntime.InferenceSession``; a model ORT refuses is the user's input (one line).
    ``threads`` caps its intra-op threads (one actor or worker per core). ``lean``: no CPU
    memory arena and no memory pattern, for one run that fetches every value (verify): each
    buffer is freed when its last reader is done instead of staying in an arena or a plan
    sized for repeated runs, and no pre-packed copy of the weights (FCN-32s' ONNX Runtime then
    opens under a 4 GiB cap where it failed with std::bad_alloc)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as one line of ours, not its log
    if lean:
        options.enable_cpu_mem_arena = False
        options.enable_mem_pattern = False
        # no second, pre-packed copy of every weight matrix kept beside the weights
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(model, options, providers=list(providers))
    except Exception as exc:  # ORT raises its own types
        from ...budget import memory_failure

        failed = memory_failure(exc)  # out of memory: the memory's error, not the model's
        if failed is not None:
            raise failed from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        where = source if source is not None else (model if isinstance(model, str) else None)
        raise CaffeCompatError(f"ONNX Runtime cannot load the model: {first}", path=where) from None


def run_all(
    session_: Any,
    feeds: Mapping[str, np.ndarray],
    switches: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Every output of the session by name, for float32 feeds (``switches``: other inputs,
    fed as they are, e.g. the bool that turns Monte Carlo dropout off)."""
    names = [o.name for o in session_.get_outputs()]
    arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
    outs = session_.run(names, {**arrays, **(switches or {})})
    return dict(zip(names, outs))


def run_all_lean(
    session_: Any,
    feeds: Mapping[str, np.ndarray],
    switches: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """``run_all``, holding about one copy of the outputs: the runtime's tensors are turned into
    numpy arrays one at a time, each tensor released once copied (``run`` would hold every
    tensor and every copy at once)."""
    from onnxruntime import OrtValue

    names = [o.name for o in session_.get_outputs()]
    given = {k: np.ascontiguousarray(v, np.float32) for k, v in feeds.items()}
    given.update(switches or {})
    inputs = {k: OrtValue.ortvalue_from_numpy(v) for k, v in given.items()}
    outs = list(session_.run_with_ort_values(names, inputs))
    found: dict[str, np.ndarray] = {}
    for index, name in enumerate(names):
        found[name] = outs[index].numpy()
        outs[index] = None  # the runtime's tensor goes as soon as it is copied
    return found
