"""The stored-arrays judge: blobs saved by real Caffe (or any reference) in an ``.npz`` by name."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..errors import CaffeCompatError
from ..ir.graph import Graph


def load_reference_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (no pickles), by name; a bad file is one line."""
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
