"""Shape inference over a Graph with the registered Caffe shape rules, and the weights join.

Both walk the graph once in execution order. Weights are matched to layers by name, as Caffe does,
and every disagreement is collected so a user sees all of them at once.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import text_format

from .. import registry
from ..errors import CaffeCompatError, NetDefinitionError, Remedy, WeightsMismatchError
from ..io.weights import Weights
from .graph import Graph, Node, Shape
from .placeholder import is_placeholder, placeholder_hint, typical_shape
from .validate import format_shape, layer_problem, shape_problem


@dataclass(frozen=True)
class Issue:
    """One disagreement between net and weights, or a layer whose shapes could not be inferred."""

    layer: str
    kind: str  # "missing", "extra", "count", "shape", "shape-rule"
    detail: str

    def __str__(self) -> str:
        return f'layer "{self.layer}": {self.detail}'


@dataclass
class Inference:
    """Value shapes, expected parameter shapes per layer, and what went wrong (lenient mode)."""

    shapes: dict[str, Shape | None]
    params: dict[str, list[Shape]]
    issues: list[Issue]


_fmt = format_shape


def _settings(node: Node) -> str:
    """The layer's own parameter messages on one line (for messages about unexpected failures)."""
    parts = [
        f"{field.name} {{ {text_format.MessageToString(value, as_one_line=True)} }}"
        for field, value in node.param.ListFields()
        if field.name.endswith("_param")
    ]
    text = " ".join(parts) or "no parameters"
    return text if len(text) <= 200 else text[:197] + "..."


def _apply_rule(
    fn: Callable[..., Any], node: Node, ins: list[Shape]
) -> tuple[list[Shape], list[Shape], str | None]:
    """Run one shape rule; any exception it raises becomes the reason the layer is refused.

    Rules raise ValueError for what Caffe refuses; anything else is a gap in validation or a bug
    in the rule, so the message keeps the exception type, the settings and the bottom shapes."""
    try:
        outs, params = fn(node, ins)
        outs = [tuple(int(d) for d in shape) for shape in outs]
        params = [tuple(int(d) for d in shape) for shape in params]
    except CaffeCompatError as exc:
        return [], [], exc.reason
    except ValueError as exc:
        return [], [], str(exc)
    except Exception as exc:
        shapes = ", ".join(_fmt(s) for s in ins) or "none"
        failed = f"the shape rule failed ({type(exc).__name__}: {exc})"
        return [], [], f"{failed} on {_settings(node)} with bottoms {shapes}"
    if len(outs) != len(node.outputs):
        return [], [], f"{len(node.outputs)} tops but the rule gave {len(outs)}"
    for value, shape in zip(node.outputs, outs):
        problem = shape_problem(shape)
        if problem:
            return [], [], f'top "{value}" would be {_fmt(shape)}: {problem}'
    for index, shape in enumerate(params):
        problem = shape_problem(shape)
        if problem:
            return [], [], f"parameter blob {index} would be {_fmt(shape)}: {problem}"
    return outs, params, None


def infer_shapes(graph: Graph, *, strict: bool = True) -> Inference:
    """Apply Caffe's shape rules layer by layer; fill ``graph.shapes``.

    Strict mode raises the first problem (after a preflight listing every unknown layer type);
    lenient mode records problems and carries on with unknown shapes, for ``inspect``.
    """
    if strict:
        registry.preflight(graph, ["shape"])
    result = Inference(shapes={}, params={}, issues=[])
    names = f"{graph.name} {os.path.basename(graph.path or '')}"
    placeholders = {n: s for n, s in graph.inputs.items() if is_placeholder(s)}
    for name, shape in graph.inputs.items():
        if shape is None:
            reason = placeholder_hint(name, shape, names)
            if strict:
                option = "input_shapes_or_typical" if typical_shape(names) else "input_shapes"
                remedy = Remedy(option, value=name, purpose="to give it one")
                raise NetDefinitionError(reason, path=graph.path, remedy=remedy)
            reason += f"; pass its shape (--input-shape {name}=N,C,H,W)"
            if typical_shape(names):
                reason += " or --typical-input-shape to run at that size"
            result.issues.append(Issue(name, "shape-rule", reason))
        result.shapes[name] = shape
    for node in graph.nodes:
        ins = [result.shapes.get(v) for v in node.inputs]
        entry = registry.lookup(node.type, "shape")
        problem = None
        if entry is None:
            problem = f'no shape rule for type "{node.type}"'
        elif any(s is None for s in ins):
            problem = "input shape unknown"
        else:
            problem = layer_problem(node.param)
            if problem is None:
                outs, params, problem = _apply_rule(entry.fn, node, ins)
        if problem is not None:
            hint = _placeholder_remedy(placeholders, names)
            if strict:
                raise NetDefinitionError(
                    problem + (f" ({hint[0]})" if hint else ""),
                    path=graph.path,
                    layer=node.name,
                    layer_type=node.type,
                    line=node.line,
                    remedy=hint[1] if hint else None,
                )
            if problem != "input shape unknown":
                result.issues.append(Issue(node.name, "shape-rule", problem))
            for value in node.outputs:
                result.shapes[value] = None
            continue
        result.params[node.name] = params
        for value, shape in zip(node.outputs, outs):
            result.shapes[value] = shape
    hint = _placeholder_remedy(placeholders, names)
    if hint and any(i.kind == "shape-rule" for i in result.issues):
        detail = f"{hint[0]}; pass its real shape (--input-shape {hint[1].value}=N,C,H,W)"
        if hint[1].option == "input_shapes_or_typical":
            detail += " or --typical-input-shape to run at that size"
        result.issues.append(Issue(hint[1].value, "shape-rule", detail))
    for node, problem in _shared_names(graph, result.params):
        if strict:
            raise NetDefinitionError(
                problem,
                path=graph.path,
                layer=node.param.name,
                layer_type=node.type,
                line=node.line,
            )
        result.issues.append(Issue(node.name, "shape-rule", problem))
    graph.shapes = {k: v for k, v in result.shapes.items() if v is not None}
    return result


def _placeholder_remedy(
    placeholders: dict[str, Shape | None], names: str
) -> tuple[str, Remedy] | None:
    """Why a shape rule failing in a net whose image input is a 1x1 placeholder most likely
    failed, and the option to pass; None when no input is one (or none has a shape: that
    input was refused first)."""
    declared = {n: s for n, s in placeholders.items() if s is not None}
    if not declared:
        return None
    name, shape = next(iter(declared.items()))
    option = "input_shapes_or_typical" if typical_shape(names, shape) else "input_shapes"
    return placeholder_hint(name, shape, names), Remedy(
        option, value=name, purpose="with the size to run at"
    )


def _shared_names(graph: Graph, params: dict[str, list[Shape]]) -> list[tuple[Node, str]]:
    """Layers whose repeated Caffe name would make weights attach to one of them only.

    Caffe accepts repeated layer names; its ``CopyTrainedLayersFrom`` copies a caffemodel's
    blobs of a name into the first layer bearing it (``CopyTrainedLayersFromHDF5``: the last),
    and the others keep their fillers. Where none of the layers has parameters there is nothing
    to attach and the net computes what Caffe computes; otherwise the net is refused, never
    given one of two readings silently."""
    groups: dict[str, list[Node]] = {}
    for node in graph.nodes:
        groups.setdefault(node.param.name or node.name, []).append(node)
    found = []
    for name, nodes in groups.items():
        holders = [n for n in nodes if params.get(n.name)]
        if len(nodes) > 1 and holders:
            found.append(
                (
                    holders[0],
                    f'{len(nodes)} layers are named "{name}" and this one has parameters: '
                    "Caffe copies a caffemodel's blobs of a name into the first layer bearing it "
                    "only (an HDF5 file's into the last) and leaves the others at their fillers; "
                    "give the layers distinct names",
                )
            )
    return found


def batch_dependence(graph: Graph) -> str | None:
    """Why the net runs only at its declared batch (None when any batch computes the same
    function): a layer whose parameters or non-batch axes change with the batch, such as an
    InnerProduct or Scale over axis 0. Caffe would refuse such a net reshaped to another batch;
    synthetic checks must then use the declared one. Found by inferring at batch B and B + 1."""
    if not graph.inputs or any(not shape for shape in graph.inputs.values()):
        return None
    runs = []
    for extra in (0, 1):
        inputs = {n: (s[0] + extra, *s[1:]) for n, s in graph.inputs.items()}
        probe = Graph(graph.name, inputs, graph.nodes, graph.outputs, path=graph.path)
        try:
            runs.append(infer_shapes(probe, strict=True))
        except CaffeCompatError as exc:
            return f"at another batch size: {exc.reason}"
    (before, after) = runs
    batch = next(iter(graph.inputs.values()))[0]
    for node in graph.nodes:
        moved = before.params.get(node.name) != after.params.get(node.name)
        for value in node.outputs:
            s0, s1 = before.shapes[value], after.shapes[value]
            same_rest = bool(s0) and bool(s1) and s0[1:] == s1[1:]  # a scalar has no rows
            # k rows per item (a Concat along axis 0 of the batch and its mirror image, then
            # a Slice into halves: AM-Softmax's test nets) follow the batch as one row does.
            rows = same_rest and (s1[0] == s0[0] + 1 or s0[0] * (batch + 1) == s1[0] * batch)
            moved = moved or not (s0 == s1 or rows)
        if moved:
            return f'layer "{node.name}" ({node.type}) computes across the batch axis'
    return None


def _fit(array: np.ndarray, expected: Shape) -> np.ndarray | None:
    """The blob in the expected shape, or None. Legacy 4-D blobs are right-aligned (Caffe rule)."""
    if tuple(array.shape) == tuple(expected):
        return array
    legacy = (1,) * (4 - len(expected)) + tuple(expected) if len(expected) <= 4 else None
    if array.ndim == 4 and legacy is not None and tuple(array.shape) == legacy:
        return array.reshape(expected)
    return None


def match_weights(graph: Graph, weights: Weights, inference: Inference) -> list[Issue]:
    """Attach weights to nodes by layer name; return every mismatch (nothing raised here)."""
    issues: list[Issue] = []
    names = {node.name for node in graph.nodes}
    for node in graph.nodes:
        expected = inference.params.get(node.name)
        stored = weights.blobs.get(node.name)
        if expected is None:
            if stored:
                node.blobs = list(stored)
            continue
        if not expected:
            if stored:
                issues.append(
                    Issue(
                        node.name,
                        "count",
                        f"holds no parameters but the weights have {len(stored)}",
                    )
                )
            continue
        if not stored:
            what = (
                "is missing from the weights" if node.name not in weights.blobs else "has no blobs"
            )
            issues.append(
                Issue(
                    node.name,
                    "missing",
                    f"{what}; expected {len(expected)} blob(s) "
                    + ", ".join(_fmt(s) for s in expected),
                )
            )
            continue
        if len(stored) != len(expected):
            issues.append(
                Issue(
                    node.name,
                    "count",
                    f"expected {len(expected)} blob(s), the weights hold {len(stored)}",
                )
            )
            continue
        fitted = []
        for index, (array, shape) in enumerate(zip(stored, expected)):
            good = _fit(array, shape)
            if good is None:
                issues.append(
                    Issue(
                        node.name,
                        "shape",
                        f"blob {index} is {_fmt(tuple(array.shape))} in the weights, "
                        f"the net needs {_fmt(shape)}",
                    )
                )
            fitted.append(good)
        if all(a is not None for a in fitted):
            node.blobs = fitted  # type: ignore[assignment]
    for name, arrays in weights.blobs.items():
        if name not in names and arrays:
            kind = weights.layer_type(name)
            label = f" ({kind})" if kind else ""
            issues.append(Issue(name, "extra", f"is in the weights{label} but not in the net"))
    return issues


def check_weights(graph: Graph, issues: list[Issue], weights_path: str) -> None:
    """Raise one error listing every mismatch that stops conversion (extra layers only warn)."""
    blocking = [i for i in issues if i.kind != "extra"]
    if blocking:
        detail = "; ".join(str(i) for i in blocking)
        raise WeightsMismatchError(
            f"{len(blocking)} mismatch(es) between net and weights: {detail}", path=weights_path
        )


def require_weights(node: Node) -> None:
    """Converters call this: a layer with parameters must have its blobs attached."""
    if not node.blobs:
        raise NetDefinitionError("has no weights attached", layer=node.name, layer_type=node.type)
