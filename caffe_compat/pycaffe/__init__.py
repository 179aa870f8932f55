"""A drop-in for BVLC Caffe's Python interface (``import caffe``), running on caffe-compat.

Legacy scripts and notebooks run with only the import changed::

    import caffe_compat.pycaffe as caffe

    net = caffe.Net("deploy.prototxt", "weights.caffemodel", caffe.TEST)
    net.blobs["data"].data[...] = image
    prob = net.forward()["prob"]

or, to leave the script untouched, call ``caffe_compat.pycaffe.install()`` once before it runs:
a bare ``import caffe`` (and ``caffe.io``, ``caffe.proto.caffe_pb2``, ...) then resolves here until
``uninstall()``. Nets run with the PyTorch back end on the CPU, or on CUDA after
``caffe.set_mode_gpu()``. Train/val nets, ``backward`` and the solvers (``caffe.SGDSolver``
... ``caffe.get_solver``) run as Caffe's do (pycaffe.py, _solver.py).
"""

from __future__ import annotations

import sys
from types import ModuleType

from ..proto import caffe_pb2
from . import coord_map, draw, io, proto
from ._caffe import (
    NCCL,
    Blob,
    Layer,
    Timer,
    __version__,
    has_nccl,
    init_log,
    layer_type_list,
    set_device,
    set_mode_cpu,
    set_mode_gpu,
    set_multiprocess,
    set_random_seed,
    set_solver_count,
    set_solver_rank,
    solver_count,
    solver_rank,
)
from ._caffe import log_message as log
from ._solver import (
    AdaDeltaSolver,
    AdaGradSolver,
    AdamSolver,
    NesterovSolver,
    RMSPropSolver,
    SGDSolver,
    Solver,
    get_solver,
)
from .classifier import Classifier
from .detector import Detector
from .net_spec import NetSpec, layers, params, to_proto
from .pycaffe import TEST, TRAIN, Net

__all__ = [
    "NCCL",
    "TEST",
    "TRAIN",
    "AdaDeltaSolver",
    "AdaGradSolver",
    "AdamSolver",
    "Blob",
    "Classifier",
    "Detector",
    "Layer",
    "NesterovSolver",
    "Net",
    "NetSpec",
    "RMSPropSolver",
    "SGDSolver",
    "Solver",
    "Timer",
    "__version__",
    "coord_map",
    "draw",
    "get_solver",
    "has_nccl",
    "init_log",
    "install",
    "io",
    "layer_type_list",
    "layers",
    "log",
    "params",
    "proto",
    "set_device",
    "set_mode_cpu",
    "set_mode_gpu",
    "set_multiprocess",
    "set_random_seed",
    "set_solver_count",
    "set_solver_rank",
    "solver_count",
    "solver_rank",
    "to_proto",
    "uninstall",
]

_SUBMODULES = (
    "io",
    "proto",
    "classifier",
    "detector",
    "pycaffe",
    "net_spec",
    "coord_map",
    "draw",
    "_caffe",
)
_saved: dict[str, ModuleType | None] | None = None


def _is_caffe(name: str) -> bool:
    return name == "caffe" or name.startswith("caffe.")


def install() -> ModuleType:
    """Make ``import caffe`` (and its submodules) resolve to this package; returns it.

    Whatever ``caffe`` modules were imported before are set aside and come back on
    :func:`uninstall`. Calling it again while installed does nothing.
    """
    global _saved
    package = sys.modules[__name__]
    if _saved is not None and sys.modules.get("caffe") is package:
        return package
    _saved = {name: module for name, module in sys.modules.items() if _is_caffe(name)}
    for name in _saved:
        del sys.modules[name]
    sys.modules["caffe"] = package
    for sub in _SUBMODULES:
        sys.modules[f"caffe.{sub}"] = sys.modules[f"{__name__}.{sub}"]
    sys.modules["caffe.proto.caffe_pb2"] = caffe_pb2
    return package


def uninstall() -> None:
    """Undo :func:`install`: remove the ``caffe`` aliases and restore what was there before."""
    global _saved
    if _saved is None:
        return
    for name in [n for n in sys.modules if _is_caffe(n)]:
        del sys.modules[name]
    sys.modules.update({k: v for k, v in _saved.items() if v is not None})
    _saved = None
