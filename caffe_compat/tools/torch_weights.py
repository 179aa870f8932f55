"""A pickle-free PyTorch output: the Caffe blobs as safetensors, the net definition beside them.

``torch.save`` files (``.pt``) are pickles, and ``torch.export.load`` unpickles entries of a
``.pt2`` archive too, so loading either one from someone else runs whatever code they put in it.
This format holds only data: one ``.safetensors`` file whose tensors are the Caffe parameter
blobs (``<layer>/<index>``, float32, exactly as in the caffemodel) and whose string metadata
carries the net definition as V2 prototxt text, the options it was loaded with (phase, stages,
level, input shapes, ``--optimize``) and where it came from. ``load_torch`` rebuilds the
``CaffeNet`` module from those with the same code as a fresh conversion, so the result is
identical to converting the original files. The safetensors parser checks the header and every
tensor's extent against the file before anything is read; the net definition then passes the
same checks as a prototxt, and every blob's shape is checked against it.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FileFormatError
from ..io.weights import Weights
from ..io.writer import net_to_text
from ..ir.load import LoadedNet, load_net_text

FORMAT = "caffe-compat.torch-weights"
FORMAT_VERSION = "1"
_OPTION_KEYS = ("phase", "stages", "level", "input_shapes")


def net_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``load_net`` options that shape the graph, in JSON-able form."""
    kept = {k: options[k] for k in _OPTION_KEYS if options.get(k) is not None}
    if "stages" in kept:
        kept["stages"] = list(kept["stages"])
    if "input_shapes" in kept:
        kept["input_shapes"] = {n: list(s) for n, s in kept["input_shapes"].items()}
    return kept


def save_torch_weights(
    path: str | os.PathLike[str],
    loaded: LoadedNet,
    blobs: Mapping[str, Sequence[np.ndarray]],
    *,
    options: Mapping[str, Any],
    optimize: bool,
    provenance: Mapping[str, str],
) -> None:
    """Write ``blobs`` (the Caffe parameter blobs by layer) and ``loaded``'s net definition."""
    from safetensors.numpy import save_file

    tensors = {
        f"{layer}/{index}": np.ascontiguousarray(array, dtype=np.float32)
        for layer, arrays in blobs.items()
        for index, array in enumerate(arrays)
    }
    if loaded.assumed:  # typical_input_shapes: the file keeps the shapes it was built at
        given = dict(options.get("input_shapes") or {})
        options = {**options, "input_shapes": {**loaded.graph.inputs, **given}}
    metadata = {
        **provenance,
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "prototxt": net_to_text(loaded.net),
        "net_options": json.dumps(net_options(options)),
        "optimize": json.dumps(bool(optimize)),
    }
    save_file(tensors, str(path), metadata=metadata)


def _bad(path: Path, reason: str) -> FileFormatError:
    return FileFormatError(reason, path=str(path))


def _read(path: Path) -> tuple[dict[str, str], dict[str, list[np.ndarray]]]:
    """Metadata and blobs by layer; every problem is one line naming the file."""
    from safetensors import SafetensorError, safe_open

    try:
        info = os.stat(path)
    except OSError as exc:
        raise _bad(path, f"cannot open: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise _bad(path, "is not a regular file")
    numbered: dict[str, dict[int, np.ndarray]] = {}
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = dict(handle.metadata() or {})
            if metadata.get("format") != FORMAT:
                raise _bad(path, f"not a caffe-compat torch-weights file (no {FORMAT} metadata)")
            if metadata.get("format_version") != FORMAT_VERSION:
                raise _bad(
                    path,
                    f"torch-weights format version {metadata.get('format_version')!r}; this "
                    f"caffe-compat reads version {FORMAT_VERSION}",
                )
            for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                layer, _, index = key.rpartition("/")
                if not layer or not index.isdigit() or len(index) > 6:
                    raise _bad(path, f"tensor name {key!r} is not <layer>/<blob index>")
                array = handle.get_tensor(key)
                if array.dtype != np.float32:
                    raise _bad(path, f"tensor {key!r} holds {array.dtype}, not float32")
                numbered.setdefault(layer, {})[int(index)] = array
    except FileFormatError:
        raise
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise _bad(path, f"not a readable safetensors file ({detail})") from None
    blobs: dict[str, list[np.ndarray]] = {}
    for layer, arrays in numbered.items():
        if sorted(arrays) != list(range(len(arrays))):
            raise _bad(path, f'layer "{layer}": blob indices {sorted(arrays)} are not 0..n-1')
        blobs[layer] = [arrays[i] for i in range(len(arrays))]
    return metadata, blobs


def _options(path: Path, text: str | None) -> dict[str, Any]:
    try:
        options = json.loads(text or "{}")
    except ValueError:
        options = None
    if not isinstance(options, dict) or set(options) - set(_OPTION_KEYS):
        raise _bad(path, "net_options metadata is not a JSON object of load options")
    if "input_shapes" in options:
        shapes = options["input_shapes"]
        if not isinstance(shapes, dict) or not all(
            isinstance(s, list) and all(isinstance(d, int) and d > 0 for d in s)
            for s in shapes.values()
        ):
            raise _bad(path, "net_options input_shapes is not {name: [positive ints]}")
        options["input_shapes"] = {n: tuple(s) for n, s in shapes.items()}
    return options


def load_torch(path: str | os.PathLike[str]) -> Any:
    """The eval-mode ``CaffeNet`` of a torch-weights file (``convert --to torch-weights``).

    Nothing in the file is executed or unpickled. ``model.provenance`` holds what the file says
    about its source (converter, prototxt and weights identities, conversion id).
    """
    path = Path(path)
    metadata, blobs = _read(path)
    text = metadata.get("prototxt")
    if not text:
        raise _bad(path, "no net definition (prototxt metadata) in the file")
    options = _options(path, metadata.get("net_options"))
    optimize = metadata.get("optimize", "false")
    if optimize not in ("true", "false"):
        raise _bad(path, f"optimize metadata must be true or false, got {optimize!r}")
    weights = Weights(path=str(path), format="torch-weights", blobs=blobs)
    loaded = load_net_text(text, weights, path=f"{path} (net definition)", **options)
    graph = loaded.graph
    if optimize == "true":
        from ..passes import optimize as optimize_graph

        graph = optimize_graph(graph)
    from ..converters.torch.model import to_torch

    model = to_torch(graph)
    model.eval()
    model.provenance = {
        k: v for k, v in metadata.items() if k not in ("prototxt", "net_options", "optimize")
    }
    return model
