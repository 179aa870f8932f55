"""What every weights reader returns: named parameter blobs per layer, plus what the file said."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..proto import caffe_pb2


@dataclass
class Weights:
    """Parameter blobs by layer name, in file order, and the layer definitions stored beside them.

    ``layers`` holds each stored layer's definition (V2 form, blobs removed) for binary files;
    HDF5 files carry no definitions, so it is empty there.
    """

    path: str
    format: str  # "caffemodel-v2", "caffemodel-v1", "caffemodel-v0" or "hdf5"
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    layers: dict[str, caffe_pb2.LayerParameter] = field(default_factory=dict)
    net_name: str = ""
    duplicates: list[str] = field(default_factory=list)

    @property
    def parameter_count(self) -> int:
        return sum(int(a.size) for arrays in self.blobs.values() for a in arrays)

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for arrays in self.blobs.values() for a in arrays)

    def layer_type(self, name: str) -> str:
        layer = self.layers.get(name)
        return layer.type if layer is not None else ""
