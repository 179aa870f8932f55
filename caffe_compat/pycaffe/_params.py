"""Parameter blobs: their starting values (Caffe's fillers) and ``CopyTrainedLayersFrom``.

A net made without weights starts from the fillers its layers declare, with Caffe's defaults
(each type's ``fillers`` fact, read through ``tools.fillers``). Copying from a weights file
matches layers by name, ignores layers the net lacks, keeps the starting values of layers the
file lacks, and stops at the first blob count or shape that differs, with Caffe's wording.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np

from ..errors import WeightsMismatchError
from ..io.weights import Weights
from ..proto import caffe_pb2
from ..tools.fillers import caffe_fillers, fill
from ._caffe import Blob


def fill_blobs(
    param: caffe_pb2.LayerParameter,
    blobs: Sequence[Blob],
    rng: np.random.Generator,
    keep: Collection[int] = (),
) -> None:
    """Fill one layer's blobs (but those at indices ``keep``) as Caffe's LayerSetUp would."""
    fillers = caffe_fillers(param)
    for index, blob in enumerate(blobs):
        if index in keep:
            continue
        if index < len(fillers):
            np.copyto(blob._view(), fill(fillers[index], blob.shape, rng), casting="unsafe")
        else:
            blob._view()[...] = 0.0


def shape_string(shape: Sequence[int]) -> str:
    """Caffe's Blob::shape_string: dims separated by spaces, then the count."""
    return "".join(f"{d} " for d in shape) + f"({math.prod(shape)})"


def _fits(source: np.ndarray, target: tuple[int, ...]) -> bool:
    """Caffe's ShapeEquals: exact, or a legacy 4-D blob that right-aligns to the target."""
    if tuple(source.shape) == target:
        return True
    if source.ndim == 4 and len(target) <= 4:
        return tuple(source.shape) == (1,) * (4 - len(target)) + target
    return False


def copy_trained_layers(
    names: Sequence[str], params: Sequence[list[Blob]], weights: Weights
) -> set[int]:
    """Copy ``weights`` into the blobs of the layers named ``names``; return the layers written."""
    where = {name: index for index, name in reversed(list(enumerate(names)))}
    written: set[int] = set()
    for name, arrays in weights.blobs.items():
        index = where.get(name)
        if index is None:
            continue  # Caffe: "Ignoring source layer"
        targets = params[index]
        if len(targets) != len(arrays):
            raise WeightsMismatchError(
                f"Incompatible number of blobs for layer {name}", path=weights.path
            )
        for j, (blob, array) in enumerate(zip(targets, arrays)):
            if not _fits(array, blob.shape):
                raise WeightsMismatchError(
                    f"Cannot copy param {j} weights from layer '{name}'; shape mismatch. "
                    f"Source param shape is {shape_string(array.shape)}; target param shape is "
                    f"{shape_string(blob.shape)}. To learn this layer's parameters from scratch "
                    "rather than copying from a saved net, rename the layer.",
                    path=weights.path,
                )
        for blob, array in zip(targets, arrays):
            blob._sync()
            np.copyto(blob._view(), np.reshape(array, blob.shape), casting="unsafe")
        written.add(index)
    return written


def share_param(
    owner: Blob,
    owner_layer: str,
    shape: tuple[int, ...],
    spec: caffe_pb2.ParamSpec,
    layer: str,
) -> Blob:
    """The blob a layer uses for a parameter named in ``spec`` that ``owner_layer`` declared first
    (Caffe's AppendParam/ShareWeights): the owner's blob, or a view of its memory in this layer's
    shape when ``share_mode`` is PERMISSIVE and only the counts agree."""
    what = f"Cannot share param '{spec.name}' owned by layer '{owner_layer}' with layer '{layer}'"
    if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE:
        if math.prod(shape) != owner.count:
            raise WeightsMismatchError(
                f"{what}; count mismatch. Owner layer param shape is {shape_string(owner.shape)}; "
                f"sharing layer shape is {shape_string(shape)}"
            )
    elif tuple(shape) != owner.shape:
        raise WeightsMismatchError(
            f"{what}; shape mismatch. Owner layer param shape is {shape_string(owner.shape)}; "
            f"sharing layer expects shape {shape_string(shape)}"
        )
    if tuple(shape) == owner.shape:
        return owner
    alias = Blob(tuple(shape))
    alias._buf = owner._buf
    owner.diff  # noqa: B018 - allocate the owner's diff, which the alias shares (ShareDiff)
    alias._diff = owner._diff
    return alias
