"""One net on one back end for inference: float32 N x C x H x W in, one output blob out (numpy).

``torch`` runs our CaffeNet; ``onnx`` runs our exported model in ONNX Runtime. Models come from
files (``MODEL.onnx``, or a prototxt and weights converted in memory) or from ``load_pretrained``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CaffeCompatError, Remedy

RUNTIMES = ("torch", "onnx")  # what the application runs a model on


@dataclass
class Runner:
    """Float32 N x C x H x W in, one output blob out (numpy). ``input_hw`` is the net's input
    size when the model states it; ``labels`` the ones an exported ``.onnx`` file records."""

    backend: str
    source: str
    call: Any
    input_hw: tuple[int, int] | None = None
    output_width: int | None = None
    labels: tuple[str, ...] | None = None

    def __call__(self, data: np.ndarray) -> np.ndarray:
        return self.call(data)


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for one call, restored after (it is process-wide)."""
    import torch

    if threads is None:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def torch_runner(
    model: Any,
    output: str | None,
    source: str,
    device: str,
    precision: str | None = None,
    threads: int | None = None,
) -> Runner:
    """Our CaffeNet on ``device``, in ``precision`` (default: the mode the model holds);
    ``threads``: intra-op threads per call (None: PyTorch's default)."""
    import torch

    if precision is not None:
        model.set_precision(precision)
    graph = model.graph
    name = _pick_output([graph.blob_of.get(v, v) for v in graph.outputs], output, source)
    value = graph.resolve(name)
    model = model.to(device).eval()

    def call(data: np.ndarray) -> np.ndarray:
        with torch.no_grad(), _torch_threads(threads):
            out = model(torch.from_numpy(data).to(device), outputs=[name])[name]
        return out.detach().cpu().numpy()

    first = next(iter(graph.inputs.values()))
    shape = graph.shapes.get(value)
    width = int(np.prod(shape[1:])) if shape else None
    return Runner("torch", source, call, _hw(first), width)


def onnx_runner(
    model: bytes | str, output: str | None, source: str, device: str, threads: int | None = None
) -> Runner:
    """Our exported model in ONNX Runtime (CUDA provider first on a ``cuda`` device);
    ``threads``: intra-op threads (None: ONNX Runtime's default, all cores)."""
    from ..converters.onnx.runtime import providers_for
    from ..converters.onnx.runtime import session as open_session

    providers = providers_for(device)
    session = open_session(model, providers=providers, source=source, threads=threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise CaffeCompatError(f"expected a net with one input, found {len(inputs)}", path=source)
    name = _pick_output([o.name for o in outputs], output, source)
    out = next(o for o in outputs if o.name == name)
    input_name = inputs[0].name
    dims = [d for d in out.shape[1:]]
    width = int(np.prod(dims)) if dims and all(isinstance(d, int) for d in dims) else None
    meta = session.get_modelmeta().custom_metadata_map
    labels = None
    if "labels" in meta:
        try:
            labels = tuple(str(x) for x in json.loads(meta["labels"]))
        except (ValueError, TypeError):
            labels = None

    def call(data: np.ndarray) -> np.ndarray:
        return session.run([name], {input_name: data})[0]

    return Runner("onnx", source, call, _hw(inputs[0].shape), width, labels)


def _hw(shape: Sequence[Any]) -> tuple[int, int] | None:
    if len(shape) == 4 and all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return int(shape[2]), int(shape[3])
    return None


def _pick_output(names: list[str], wanted: str | None, source: str) -> str:
    if wanted and wanted in names:
        return wanted
    if len(names) == 1:
        return names[0]
    raise CaffeCompatError(
        f"the net has outputs {', '.join(names)}; none is {wanted!r}", path=source
    )


def is_onnx_path(spec: Any) -> bool:
    """Whether a model spec is one ``.onnx`` file (a path, or a one-element sequence)."""
    if isinstance(spec, (list, tuple)) and len(spec) == 1:
        spec = spec[0]
    return isinstance(spec, (str, os.PathLike)) and os.fspath(spec).lower().endswith(".onnx")


def load_runner(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    *,
    backend: str = "torch",
    device: str = "cpu",
    output: str | None = None,
    precision: str | None = None,
    threads: int | None = None,
) -> Runner:
    """A net from files: ``MODEL.onnx`` (ONNX Runtime), or a prototxt + weights converted in
    memory for ``backend`` (torch in ``precision``, see ``precision.py``)."""
    if backend not in RUNTIMES:
        raise CaffeCompatError(f"backend must be one of {', '.join(RUNTIMES)}, not {backend!r}")
    if weights is None:
        if not is_onnx_path(model):
            raise CaffeCompatError(
                "a model is MODEL.onnx or PROTOTXT WEIGHTS; got a single file that is not .onnx",
                path=str(model),
            )
        if backend == "torch":
            raise CaffeCompatError(
                "an .onnx model runs on the onnx back end",
                path=str(model),
                remedy=Remedy("backend", value="onnx"),
            )
        if not Path(model).is_file():
            raise CaffeCompatError("no such file", path=str(model))
        return onnx_runner(str(model), output, str(model), device, threads)
    from ..ir.load import load_net

    loaded = load_net(model, weights)
    source = f"{model} + {weights}"
    if backend == "onnx":
        from ..converters.onnx.export import to_onnx

        proto = to_onnx(loaded.graph)
        return onnx_runner(proto.SerializeToString(), output, source, device, threads)
    from ..converters.torch.model import to_torch

    return torch_runner(to_torch(loaded.graph), output, source, device, precision, threads)
