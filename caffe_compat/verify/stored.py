"""The stored-arrays judge: blobs saved by real Caffe (or any reference) in an ``.npz`` by name."""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Mapping

import numpy as np

from ..budget import Budget, resolve
from ..errors import CaffeCompatError
from ..ir.graph import Graph


def _declared_bytes(path: str | os.PathLike[str]) -> int:
    """The bytes the ``.npz``'s arrays declare in their headers, each checked against what its
    member holds (a header can claim 10^10 values in 100 bytes), read without any array."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                else:
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                header = member.tell()
            if dtype.hasobject:
                raise ValueError(f"{info.filename} holds Python objects (a pickle), not numbers")
            count = math.prod(shape)
            if count * dtype.itemsize > info.file_size - header:
                raise ValueError(
                    f"{info.filename} declares {shape} {dtype} values but holds "
                    f"{max(info.file_size - header, 0):,} bytes (truncated or forged)"
                )
            total += count * dtype.itemsize
    return total


def load_reference_npz(
    path: str | os.PathLike[str], *, max_memory: Budget | int | str | None = None
) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), by name; a bad file is one line. What the
    headers declare is checked against the members and the memory budget before any is read."""
    try:
        declared = _declared_bytes(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CaffeCompatError(
            f"not a readable .npz of arrays ({detail})", path=str(path)
        ) from None
    resolve(max_memory).require(declared, "the reference arrays", path=str(path))
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise CaffeCompatError(f"not a readable .npz of arrays ({exc})", path=str(path)) from None


def stored_values(graph: Graph, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference's blobs as graph values (Caffe's names mean the value after in-place
    layers), inputs left out."""
    values = {graph.final[b]: a for b, a in reference.items() if b in graph.final}
    return {v: a for v, a in values.items() if v not in graph.inputs}


def stored_inputs(
    graph: Graph, reference: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray] | None:
    """The reference's own inputs when it holds every input of the net."""
    if all(name in reference for name in graph.inputs):
        return {name: reference[name] for name in graph.inputs}
    return None
