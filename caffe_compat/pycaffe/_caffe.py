"""What BVLC's compiled ``_caffe`` module provides: blobs, layers, the CPU/GPU switch, solvers.

Blobs behave like Caffe's: ``data`` is a fresh float32 view of one buffer on every access, the
buffer only grows on ``reshape`` (smaller shapes reuse it, as ``Blob::Reshape`` does), and in GPU
mode results stay on the device until ``data`` is read. The solvers live in _solver.py.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from ..proto import caffe_pb2

__version__ = "1.0.0"  # CAFFE_VERSION of BVLC's master branch
log = logging.getLogger("caffe_compat.pycaffe")

_MAX_AXES = 32  # Caffe's kMaxBlobAxes


# --- mode -------------------------------------------------------------------------------------

_mode = {"gpu": False, "device": 0, "warned": False}
_seed: list[int | None] = [None]


def _warn_no_cuda(call: str) -> None:
    if not _mode["warned"]:
        _mode["warned"] = True
        warnings.warn(
            f"caffe.{call}(): CUDA is not available to PyTorch here, so caffe-compat runs on the "
            "CPU (as a CPU-only Caffe build cannot use the GPU either)",
            RuntimeWarning,
            stacklevel=3,
        )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def set_mode_cpu() -> None:
    """Run following forward passes on the CPU."""
    _mode["gpu"] = False


def set_mode_gpu() -> None:
    """Run following forward passes on the current CUDA device (CPU, with one warning, if none)."""
    _mode["gpu"] = True
    if not _cuda_available():
        _warn_no_cuda("set_mode_gpu")


def set_device(device_id: int) -> None:
    """Choose the CUDA device used in GPU mode."""
    device_id = int(device_id)
    if not _cuda_available():
        _warn_no_cuda("set_device")
        _mode["device"] = device_id
        return
    import torch

    count = torch.cuda.device_count()
    if not 0 <= device_id < count:
        raise RuntimeError(f"invalid device ordinal {device_id}: {count} CUDA device(s) present")
    _mode["device"] = device_id


def set_random_seed(seed: int) -> None:
    """Seed the fillers, Dropout masks and DummyData draws of nets created afterwards (Caffe
    seeds its one generator, which all of them draw from)."""
    _seed[0] = int(seed)


def filler_rng() -> np.random.Generator:
    return np.random.default_rng(_seed[0])


def net_seed() -> int:
    """The seed of a new net's generator (Dropout, DummyData): Caffe's seed when one was set."""
    if _seed[0] is not None:
        return _seed[0]
    import secrets

    return secrets.randbits(62)


def current_device() -> torch.device:
    """The torch device a forward pass runs on now: Caffe checks its mode at every Forward."""
    import torch

    if _mode["gpu"] and torch.cuda.is_available():
        return torch.device("cuda", _mode["device"])
    return torch.device("cpu")


# --- blobs ------------------------------------------------------------------------------------


def _dims(args: tuple[Any, ...]) -> tuple[int, ...]:
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    shape = tuple(int(a) for a in args)
    if len(shape) > _MAX_AXES:
        raise ValueError(f"a blob has at most {_MAX_AXES} axes, got {len(shape)}")
    if any(d < 0 for d in shape):
        raise ValueError(f"blob dimensions must be >= 0, got {list(shape)}")
    return shape


class Blob:
    """A Caffe blob: N-D float32 ``data`` and ``diff`` sharing one shape."""

    def __init__(self, shape: tuple[int, ...] = (), data: np.ndarray | None = None) -> None:
        self._shape = tuple(int(d) for d in shape)
        count = math.prod(self._shape)
        if data is not None:
            self._buf = np.array(data, dtype=np.float32, copy=True).reshape(-1)
        else:
            self._buf = np.zeros(count, dtype=np.float32)
        self._diff: np.ndarray | None = None
        self._pending: torch.Tensor | None = None  # newer values on a device (GPU mode)
        self._touched = False
        self._watchers: list[Callable[[Blob], None]] = []
        self.version = 0  # bumped whenever the buffer is replaced

    # Views without side effects, for the engine.
    def _view(self) -> np.ndarray:
        return self._buf[: math.prod(self._shape)].reshape(self._shape)

    def _sync(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            np.copyto(self._view(), pending.detach().cpu().numpy(), casting="unsafe")

    def _set_shape(self, shape: tuple[int, ...]) -> None:
        """Caffe's Reshape: grow the buffer only when the new count exceeds its capacity."""
        count = math.prod(shape)
        if count > self._buf.size:
            self._buf = np.zeros(count, dtype=np.float32)
            self._diff = None
            self.version += 1
        self._shape = tuple(shape)

    def _watch(self, callback: Callable[[Blob], None]) -> None:
        self._watchers.append(callback)

    @property
    def data(self) -> np.ndarray:
        self._sync()
        if not self._touched:
            for callback in self._watchers:
                callback(self)  # before the caller can write: weights are snapshotted here
            self._touched = True
        return self._view()

    @property
    def diff(self) -> np.ndarray:
        count = math.prod(self._shape)
        if self._diff is None or self._diff.size < count:
            self._diff = np.zeros(max(count, self._buf.size), dtype=np.float32)
        return self._diff[:count].reshape(self._shape)

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def count(self) -> int:
        return math.prod(self._shape)

    def _legacy(self, index: int) -> int:
        if len(self._shape) > 4:
            raise ValueError("Cannot use legacy accessors on Blobs with > 4 axes.")
        if index >= len(self._shape) or index < -len(self._shape):
            return 1
        return self._shape[index]

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def reshape(self, *args: Any, **kwargs: Any) -> None:
        """``blob.reshape(n, c, h, w)``; ``net.reshape()`` carries the new shape through the net."""
        if kwargs:
            raise RuntimeError("Blob.reshape takes no kwargs")
        shape = _dims(args)
        self._sync()
        self._set_shape(shape)

    def __repr__(self) -> str:
        return f"<caffe Blob shape={list(self._shape)}>"


class BlobVec(list):
    """A layer's parameter blobs (pycaffe's ``BlobVec``); a Python layer adds its own in
    ``setup`` with ``self.blobs.add_blob(*shape)``, which the net then keeps, saves, loads,
    shares and updates like any layer's parameters."""

    def add_blob(self, *args: Any, **kwargs: Any) -> None:
        """Append a zero-filled blob of shape ``args`` (BVLC's BlobVec_add_blob)."""
        if kwargs:
            raise RuntimeError("BlobVec.add_blob takes no kwargs")
        self.append(Blob(_dims(args)))


class Layer:
    """A layer of a net (``net.layers[i]``): its ``type`` and parameter ``blobs``.

    Also the base class of Python layers: for a ``type: "Python"`` layer, ``net.layers[i]`` is
    the user's own instance (scripts call its methods, as py-faster-rcnn's ``set_roidb``).
    """

    def __init__(self, param: caffe_pb2.LayerParameter | None = None) -> None:
        self.layer_param = param
        self._type = param.type if param is not None else "Python"
        self.blobs: BlobVec = BlobVec()

    @property
    def type(self) -> str:
        return self._type

    def setup(self, bottom: Any, top: Any) -> None:
        """Python layers override this."""

    def reshape(self, bottom: Any, top: Any) -> None:
        """Python layers override this."""

    def __repr__(self) -> str:
        return f"<caffe Layer type={self._type!r} blobs={len(self.blobs)}>"


# --- multi-GPU ------------------------------------------------------------------------------


class NCCL:
    """Caffe's NCCL handle for multi-GPU solvers. caffe-compat trains in one process
    (``has_nccl()`` is False): the handle exists, ``bcast`` has nobody to send to."""

    def __init__(self, solver: Any, uid: bytes | str) -> None:
        self.solver = solver
        self.uid = uid

    @staticmethod
    def new_uid() -> bytes:
        """An id for the (single-member) group: bytes on Python 3, as pycaffe's."""
        import os

        return os.urandom(128)

    def bcast(self) -> None:
        """Broadcast the root solver's weights: with one solver, nothing to do."""


# --- small utilities --------------------------------------------------------------------------


class Timer:
    """Caffe's wall-clock timer: ``start()``, ``stop()``, ``ms``."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._elapsed = 0.0

    def start(self) -> None:
        self._start = time.perf_counter()

    def stop(self) -> None:
        if self._start is not None:
            self._elapsed = (time.perf_counter() - self._start) * 1000.0
            self._start = None

    @property
    def ms(self) -> float:
        if self._start is not None:
            self.stop()
        return self._elapsed


def init_log(*args: Any) -> None:
    """Caffe sets up glog here; caffe-compat logs through ``logging`` already."""


def log_message(message: str) -> None:
    log.info("%s", message)


_solver = {"count": 1, "rank": 0, "multiprocess": False}


def solver_count() -> int:
    return _solver["count"]


def set_solver_count(count: int) -> None:
    _solver["count"] = int(count)


def solver_rank() -> int:
    return _solver["rank"]


def set_solver_rank(rank: int) -> None:
    _solver["rank"] = int(rank)


def set_multiprocess(value: bool) -> None:
    _solver["multiprocess"] = bool(value)


def has_nccl() -> bool:
    return False


def layer_type_list() -> list[str]:
    """Every layer type the registry knows (Caffe lists its layer registry, sorted by name):
    those that compute, data layers, losses, Accuracy, Silence."""
    from .. import registry

    known = registry.supported_types("shape") | registry.supported_types("torch")
    return sorted(known | set(registry.described_types()))
