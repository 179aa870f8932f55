"""Our own back ends under test: the PyTorch module (CPU, CUDA) and the ONNX model in ONNX Runtime.

Each returns {value name: array}. Value names are the graph's (``blob`` for Caffe's final blob,
``blob@layer`` for a value an in-place layer later overwrote). PyTorch runs in its ``exact`` mode,
held by the model (no process-wide flags).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ir.graph import Graph, Node


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
    with _expected_value(net), torch.no_grad():
        out = net(**inputs, outputs=list(values))
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


def run_torch_groups(
    model: Any, feeds: Mapping[str, np.ndarray], groups: list[list[str]], device: str = "cpu"
) -> Iterator[dict[str, np.ndarray]]:
    """Verify's streamed mode: one forward of ``model`` (a ``CaffeNet``) yielding each group of
    values once all of them are computed; nothing else of the forward is held past its last
    reader. A group whose values the model does not all produce is yielded at the end."""
    import torch

    net = model.to(device)
    inputs = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in feeds.items()}
    which = {value: index for index, group in enumerate(groups) for value in group}
    found: list[dict[str, np.ndarray]] = [{} for _ in groups]
    done = 0
    wanted = [value for group in groups for value in group]
    with _expected_value(net), torch.no_grad():
        for value, tensor in net.stream(inputs, wanted):
            if tensor.dtype == torch.float16:
                tensor = tensor.float()  # as ``forward`` returns it
            found[which[value]][value] = tensor.detach().cpu().numpy()
            while done < len(groups) and len(found[done]) == len(groups[done]):
                yield found[done]
                found[done] = {}
                done += 1
    for rest in found[done:]:
        if rest:
            yield rest


@contextlib.contextmanager
def _expected_value(net: Any) -> Iterator[None]:
    """Monte Carlo dropout at its expected value while verify runs (restored after)."""
    from ..converters.torch.activations import MonteCarloDropout

    sampled = [m for m in net.modules() if isinstance(m, MonteCarloDropout)]
    for module in sampled:
        module.sample = False
    try:
        yield
    finally:
        for module in sampled:
            module.sample = True


def open_onnxruntime(model: bytes | str, provider: str = "CPUExecutionProvider") -> Any:
    """A session for one verification run (no arena: see ``session``'s ``lean``) on the
    model's bytes or its file (the runtime parses a file as it reads it)."""
    from ..converters.onnx.runtime import session

    return session(model, providers=[provider], lean=True)


def run_onnxruntime(
    model: bytes | str | Any,
    feeds: Mapping[str, np.ndarray],
    provider: str = "CPUExecutionProvider",
) -> dict[str, np.ndarray]:
    """Every output of our ONNX model (its bytes or file, or a session from
    ``open_onnxruntime``) in ONNX Runtime on ``provider``, converted one output at a time; Monte
    Carlo dropout at its expected value (the model's sampling switch fed false), as the other
    back ends run."""
    from ..converters.onnx.runtime import run_all_lean
    from ..shapes.activations import SAMPLING_SWITCH

    opened = open_onnxruntime(model, provider) if isinstance(model, (bytes, str)) else model
    switches = {SAMPLING_SWITCH: np.array(False)}
    overridable = [*opened.get_inputs(), *opened.get_overridable_initializers()]
    if not any(i.name == SAMPLING_SWITCH for i in overridable):
        switches = {}
    return run_all_lean(opened, feeds, switches)


def onnx_for_outputs(model: str, outputs: Iterable[str], path: str) -> bool:
    """Write beside ``model`` (whose weights are external data in the same folder) a copy
    whose graph outputs are only those of ``outputs`` it has: ONNX Runtime holds every graph
    output of a run until the run ends, fetched or not, so verify's streamed mode runs one
    such model per group of values. False when the model has none of them."""
    import onnx

    proto = onnx.load(model, load_external_data=False)
    wanted = set(outputs)
    chosen = [o for o in proto.graph.output if o.name in wanted]
    if not chosen:
        return False
    del proto.graph.output[:]
    proto.graph.output.extend(chosen)
    with open(path, "wb") as out:
        out.write(proto.SerializeToString())
    return True


def with_outputs(model: bytes, names: Iterable[str]) -> bytes:
    """``model`` (a whole model's bytes, whose graph makes each of ``names``) with those
    values added to its graph outputs: a given model (convert's check) returns its net outputs
    only, and verify needs the ROIs a detector cut by data-dependent choices (verify/ties.py).
    Protobuf merges a message appended to another's bytes, its repeated fields appended, so
    the weights are never parsed or copied but once."""
    import onnx

    outputs = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names]
    if not outputs:
        return model
    return model + onnx.ModelProto(graph=onnx.GraphProto(output=outputs)).SerializeToString()


@dataclass(frozen=True)
class Segment:
    """One piece of the ONNX model in streamed mode: the values it is fed (besides the model's
    own inputs), the values it returns for comparison, and those it hands to later pieces."""

    path: str
    needs: tuple[str, ...]
    returns: tuple[str, ...]
    carries: tuple[str, ...]


def onnx_segments(
    model: str, graph: Graph, groups: list[list[str]], folder: str
) -> list[Segment] | None:
    """The ONNX model cut into one piece per group of values (verify's streamed mode): each
    piece computes its group's layers once, fed the values earlier pieces computed, so ONNX
    Runtime runs every node once in all, where one model per group would run the whole net
    each time (it prunes no node: measured). None where a cut would sever a tensor that is not
    one of the net's values (the caller then runs one whole model per group)."""
    import onnx
    from onnx.utils import Extractor

    proto = onnx.load(model, load_external_data=False)
    initial = {t.name for t in proto.graph.initializer}
    own_inputs = [i.name for i in proto.graph.input if i.name not in initial]
    outputs = {o.name for o in proto.graph.output}
    group_of = {value: index for index, group in enumerate(groups) for value in group}
    pieces: list[list[Node]] = [[] for _ in groups]
    current = 0
    for node in graph.nodes:
        found = [group_of[v] for v in node.outputs if v in group_of]
        current = min(found) if found else current
        pieces[current].append(node)
    made = [{v for node in piece for v in node.outputs} for piece in pieces]
    needs = [
        sorted({v for node in piece for v in node.inputs} - made[i] - set(own_inputs))
        for i, piece in enumerate(pieces)
    ]
    if any(v not in outputs for need in needs for v in need):
        return None  # a value the ONNX model does not name: no cut there
    extractor = Extractor(proto)
    segments = []
    for index, piece in enumerate(pieces):
        if not piece:
            continue
        later = {v for need in needs[index + 1 :] for v in need}
        carries = sorted(made[index] & later)
        returns = [v for v in sorted(made[index]) if v in outputs]
        wanted = list(dict.fromkeys([*returns, *carries]))
        if not wanted:
            continue
        try:
            part = extractor.extract_model([*own_inputs, *needs[index]], wanted)
        except Exception:  # onnx's own checks: a tensor it cannot reach
            return None
        if not _self_contained(part):
            return None
        path = str(Path(folder) / f"segment{index}.onnx")
        with open(path, "wb") as out:
            out.write(part.SerializeToString())
        segments.append(Segment(path, tuple(needs[index]), tuple(returns), tuple(carries)))
    return segments


def _self_contained(model: Any) -> bool:
    """Every tensor a node of ``model`` reads is an input, an initializer or made before."""
    known = {i.name for i in model.graph.input} | {t.name for t in model.graph.initializer}
    known.add("")
    for node in model.graph.node:
        if any(name not in known for name in node.input):
            return False
        known.update(node.output)
    return True


def run_onnx_segments(
    segments: list[Segment], feeds: Mapping[str, np.ndarray], provider: str = "CPUExecutionProvider"
) -> Iterator[dict[str, np.ndarray]]:
    """Each segment in turn, yielding the values it returns; the values later segments read
    are kept only until the last of them has run."""
    carried: dict[str, np.ndarray] = {}
    last = {v: i for i, segment in enumerate(segments) for v in segment.needs}
    for index, segment in enumerate(segments):
        given = {**feeds, **{v: carried[v] for v in segment.needs}}
        found = run_onnxruntime(segment.path, given, provider)
        carried.update({v: found[v] for v in segment.carries})
        for value in [v for v in carried if last.get(v, -1) <= index]:
            del carried[value]
        yield {v: found[v] for v in segment.returns}
        del found
