"""Our own back ends under test: the PyTorch module (CPU, CUDA) and the ONNX model in ONNX Runtime.

Each returns {value name: array}. Value names are the graph's (``blob`` for Caffe's final blob,
``blob@layer`` for a value an in-place layer later overwrote). PyTorch runs in its ``exact`` mode,
held by the model (no process-wide flags).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ..ir.graph import Graph


def run_torch(
    graph: Graph,
    feeds: Mapping[str, np.ndarray],
    values: Iterable[str],
    device: str = "cpu",
    model: object | None = None,
    precision: str = "exact",
) -> dict[str, np.ndarray]:
    """``values`` from our PyTorch module (a fresh one in ``precision`` mode unless given)."""
    import torch

    from ..converters.torch.activations import MonteCarloDropout
    from ..converters.torch.model import CaffeNet

    net = model if model is not None else CaffeNet(graph, precision=precision)
    net = net.to(device)  # type: ignore[attr-defined]
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}
    sampled = [m for m in net.modules() if isinstance(m, MonteCarloDropout)]  # type: ignore[attr-defined]
    for module in sampled:  # verify's deterministic mode: the expected value
        module.sample = False
    try:
        with torch.no_grad():
            out = net(**inputs, outputs=list(values))
    finally:
        for module in sampled:
            module.sample = True
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def open_onnxruntime(model: bytes | str, provider: str = "CPUExecutionProvider") -> Any:
    """A session for one verification run (no arena: see ``session``'s ``lean``) on the
    model's bytes or its file (the runtime parses a file as it reads it)."""
    from ..converters.onnx.runtime import session

    return session(model, providers=[provider], lean=True)


def run_onnxruntime(
    model: bytes | str | Any,
    feeds: Mapping[str, np.ndarray],
    provider: str = "CPUExecutionProvider",
) -> dict[str, np.ndarray]:
    """Every output of our ONNX model (its bytes or file, or a session from
    ``open_onnxruntime``) in ONNX Runtime on ``provider``, converted one output at a time; Monte
    Carlo dropout at its expected value (the model's sampling switch fed false), as the other
    back ends run."""
    from ..converters.onnx.runtime import run_all_lean
    from ..shapes.activations import SAMPLING_SWITCH

    opened = open_onnxruntime(model, provider) if isinstance(model, (bytes, str)) else model
    switches = {SAMPLING_SWITCH: np.array(False)}
    overridable = [*opened.get_inputs(), *opened.get_overridable_initializers()]
    if not any(i.name == SAMPLING_SWITCH for i in overridable):
        switches = {}
    return run_all_lean(opened, feeds, switches)
