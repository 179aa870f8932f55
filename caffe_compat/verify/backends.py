"""Our own back ends under test: the PyTorch module (CPU, CUDA) and the ONNX model in ONNX Runtime.

Each returns {value name: array}. Value names are the graph's (``blob`` for Caffe's final blob,
``blob@layer`` for a value an in-place layer later overwrote). PyTorch runs in its ``exact`` mode,
held by the model (no process-wide flags).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

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

    from ..converters.torch.model import CaffeNet

    net = model if model is not None else CaffeNet(graph, precision=precision)
    net = net.to(device)  # type: ignore[attr-defined]
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}
    with torch.no_grad():
        out = net(**inputs, outputs=list(values))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def run_onnxruntime(
    model_bytes: bytes, feeds: Mapping[str, np.ndarray], provider: str = "CPUExecutionProvider"
) -> dict[str, np.ndarray]:
    """Every output of our ONNX model in ONNX Runtime on ``provider``."""
    from ..converters.onnx.runtime import run_all, session

    return run_all(session(model_bytes, providers=[provider]), feeds)
