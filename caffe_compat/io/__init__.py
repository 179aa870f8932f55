"""Readers and writers for every Caffe file format. Imports numpy, protobuf and h5py only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .binaryproto import read_mean
from .caffemodel import read_caffemodel, read_caffemodel_bytes
from .hdf5 import read_hdf5, write_hdf5
from .prototxt import load_prototxt, load_solver
from .sniff import Kind, sniff
from .weights import Weights
from .writer import write_caffemodel, write_mean, write_prototxt


def read_weights(
    path: str | os.PathLike[str], *, copy: bool = True, max_memory: Any = None
) -> Weights:
    """Read weights in whichever format the file is: binary caffemodel (V1/V2) or HDF5
    (whose compressed datasets must fit ``max_memory`` by their declared size)."""
    try:
        with Path(path).open("rb") as handle:
            magic = handle.read(8)
    except OSError:
        pass  # missing, a directory, unreadable: the reader raises the one-line error
    else:
        if sniff(magic) is Kind.HDF5:  # a file cut inside the signature is HDF5 too
            return read_hdf5(path, max_memory=max_memory)
    return read_caffemodel(path, copy=copy)


__all__ = [
    "Weights",
    "load_prototxt",
    "load_solver",
    "read_caffemodel",
    "read_caffemodel_bytes",
    "read_hdf5",
    "read_mean",
    "read_weights",
    "write_caffemodel",
    "write_hdf5",
    "write_mean",
    "write_prototxt",
]
