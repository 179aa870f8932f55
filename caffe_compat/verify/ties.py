"""Discrete outputs at near-ties: argmax tops such as MAX pooling's mask (SegNet unpools with it).

Where two values of a pooling window lie within float32 error of each other, a correct float32
back end may pick the other one as the maximum than the float64 judge does (Caffe's first
maximum of the values it computed), and the mask then differs by a whole index, and every
unpooled value downstream sits elsewhere. That is not an error of the back end: it is the
judge's choice between values it cannot tell apart at float32 precision.

So a back end's mask is accepted where it differs from the judge's only at near-ties: windows
where the judge's bottom values at both indices differ by at most twice the bottom's own
comparison limit (each side may err by that much, so their order may flip). The judge is then
rerun with that back end's masks taken as given (``reference.forward(fixed=...)``), and the
values downstream are compared with that rerun; the report says which masks and how many
windows. A mask that differs anywhere else is left to fail as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

import numpy as np

from .. import registry
from ..ir.graph import Graph, Node

Values = Mapping[str, np.ndarray]


def argmax_masks(graph: Graph) -> Iterator[tuple[Node, str, str]]:
    """(layer, bottom value, mask value) of each layer with an argmax top (its type's
    ``argmax_top`` fact: MAX Pooling's mask)."""
    for node in graph.nodes:
        rule = registry.facts(node.type).argmax_top
        found = rule(node) if rule is not None else None
        if found is not None:
            yield node, node.inputs[found[0]], node.outputs[found[1]]


def near_tie_masks(
    graph: Graph, judge: Values, produced: Values, limit: Callable[[str], float]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The masks of ``produced`` that differ from ``judge``'s only at near-ties (to take as
    given in a rerun of the judge) and a note for each; ``limit(value)`` is the comparison
    limit of a value (its plain or float32-growth limit, as the table uses)."""
    fixed: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for node, bottom, mask in argmax_masks(graph):
        if mask not in judge or mask not in produced or bottom not in judge:
            continue
        theirs, mine = np.asarray(judge[mask]), np.asarray(produced[mask])
        x = np.asarray(judge[bottom])
        if theirs.shape != mine.shape or x.ndim != 4 or theirs.ndim != 4:
            continue
        differ = theirs != mine
        if not differ.any():
            continue
        n, c, _, _ = np.nonzero(differ)
        at_judge = theirs[differ].astype(np.int64)
        at_mine = mine[differ].astype(np.int64)
        plane = x.shape[2] * x.shape[3]
        inside = (at_judge >= 0) & (at_judge < plane) & (at_mine >= 0) & (at_mine < plane)
        if not inside.all():
            continue  # a window of padding only, or an index off the plane: a real difference
        flat = x.reshape(x.shape[0], x.shape[1], plane)
        gap = np.abs(flat[n, c, at_judge] - flat[n, c, at_mine])
        slack = 2.0 * limit(bottom)
        if float(gap.max()) > slack:
            continue
        fixed[mask] = mine
        notes.append(
            f'layer "{node.name}": {int(differ.sum())} of {differ.size} argmax choices differ '
            f"from the float64 judge's at near-ties (bottom values {float(gap.max()):.3g} apart, "
            f"within twice the bottom's limit {limit(bottom):.3g}); the judge was rerun with this "
            "back end's choices for the values after it"
        )
    return fixed, notes
