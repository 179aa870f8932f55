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
from ..shapes.geometry import canonical_axis

Values = Mapping[str, np.ndarray]

# a choice found against a rerun can change values a later choice reads: rounds of finding
# choices and rerunning stop when none is new, or after this many (each round a judge pass)
TIE_ROUNDS = 4


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


def class_choices(graph: Graph) -> Iterator[tuple[Node, str, str, int]]:
    """(layer, bottom value, top value, axis) of each layer whose top is the index of its
    bottom's maximum (the ``class_top`` fact: ArgMax with top_k 1; axis -1: per item)."""
    for node in graph.nodes:
        rule = registry.facts(node.type).class_top
        axis = rule(node) if rule is not None else None
        if axis is not None:
            yield node, node.inputs[0], node.outputs[0], axis


def row_sources(graph: Graph) -> Iterator[Node]:
    """Each layer whose tops' row count depends on the data (the ``varying_rows`` fact:
    Proposal, BoxOutput, BoxGroupOutput): which boxes make the cut is a discrete choice."""
    for node in graph.nodes:
        if registry.facts(node.type).varying_rows:
            yield node


def has_choices(graph: Graph) -> bool:
    """Whether any value of ``graph`` is a discrete choice verify accepts at near-ties."""
    return any(
        next(found, None) is not None
        for found in (argmax_masks(graph), class_choices(graph), row_sources(graph))
    )


def near_tie_classes(
    graph: Graph, judge: Values, produced: Values, limit: Callable[[str], float]
) -> tuple[dict[str, np.ndarray], list[str]]:
    """``near_tie_masks`` for ArgMax's tops: a produced index is accepted where it differs from
    the judge's only between classes whose judge scores lie within twice the bottom's limit
    (a SegNet's per-pixel class where two scores tie to float32 precision)."""
    fixed: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for node, bottom, top, axis in class_choices(graph):
        if top not in judge or top not in produced or bottom not in judge:
            continue
        theirs, mine = np.asarray(judge[top]), np.asarray(produced[top])
        x = np.asarray(judge[bottom])
        if theirs.shape != mine.shape or x.ndim == 0:
            continue
        if axis == -1:  # (N, 1, 1, ...) indices into each item's flattened values
            scores = x.reshape(x.shape[0], -1)
            at_judge, at_mine = (
                theirs.reshape(len(theirs), -1)[:, :1],
                mine.reshape(len(mine), -1)[:, :1],
            )
        else:
            axis = canonical_axis(axis, x.ndim)
            scores = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
            at_judge, at_mine = (np.moveaxis(t, axis, -1).reshape(-1, 1) for t in (theirs, mine))
        if at_judge.shape[0] != scores.shape[0]:
            continue
        differ = (at_judge != at_mine)[:, 0]
        if not differ.any():
            continue
        a, b = at_judge[differ, 0].astype(np.int64), at_mine[differ, 0].astype(np.int64)
        classes = scores.shape[1]
        if not (((a >= 0) & (a < classes) & (b >= 0) & (b < classes)).all()):
            continue
        rows = scores[differ]
        picked = np.arange(len(rows))
        gap = np.abs(rows[picked, a] - rows[picked, b])
        if float(gap.max()) > 2.0 * limit(bottom):
            continue
        fixed[top] = mine
        notes.append(
            f'layer "{node.name}": {int(differ.sum())} of {differ.size} class choices differ '
            f"from the float64 judge's at near-ties (scores {float(gap.max()):.3g} apart, within "
            f"twice the bottom's limit {limit(bottom):.3g}); this back end's choices were taken "
            "for the values after it"
        )
    return fixed, notes


def _same(mine: np.ndarray, theirs: np.ndarray) -> bool:
    """The same rows as float32 holds them (the judge's are kept in float32)."""
    return mine.shape == theirs.shape and np.array_equal(
        mine.astype(np.float32), theirs.astype(np.float32)
    )


def _within(mine: np.ndarray, theirs: np.ndarray, limit: float) -> bool:
    if mine.shape != theirs.shape:
        return False
    return mine.size == 0 or float(np.max(np.abs(mine - theirs))) <= limit


def recomputed_rows(
    graph: Graph,
    judge: Values,
    produced: Values,
    limit: Callable[[str], float],
    layer_forward: Callable[[Node, list[np.ndarray]], list[np.ndarray]],
    feeds: Values | None = None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """The ROIs of ``produced`` that differ from ``judge``'s, to take as given in a rerun of
    the judge, and a note for each layer: rows within each top's limit (ROI pooling rounds
    their corners to cells, so a corner a rounding apart can move a whole bin), and rows cut
    otherwise by scores rounded before the layer.

    Which boxes make a top-N cut or survive NMS turns on order: where float32 saturates
    scores to one value (a synthesized RPN's 1.0) or rounds two candidates level, a correct
    back end keeps other boxes than the float64 judge does. So a ``varying_rows`` layer whose
    tops differ is computed again in float64 (``layer_forward``) on this back end's own
    bottoms; where that gives this back end's tops (within each top's limit) the layer itself
    agrees, and the difference came from rounding before it (``feeds``: the net inputs, which
    no back end returns: py-faster-rcnn's ``im_info``). Anything else is left to fail."""
    fixed: dict[str, np.ndarray] = {}
    notes: list[str] = []
    for node in row_sources(graph):
        tops = node.outputs
        if not all(t in produced and t in judge for t in tops):
            continue
        mine = {t: np.asarray(produced[t]) for t in tops}
        theirs = {t: np.asarray(judge[t]) for t in tops}
        if all(_same(mine[t], theirs[t]) for t in tops):
            continue
        if all(_within(mine[t], theirs[t], limit(t)) for t in tops):
            fixed.update(mine)
            notes.append(
                f'layer "{node.name}": its rows lie within the limit of the float64 judge\'s but '
                "are not the same numbers, and ROI layers round box corners to cells: the judge "
                "was rerun with this back end's rows for the values after it"
            )
            continue
        given = feeds or {}
        bottoms = [produced.get(b, given.get(b, judge.get(b))) for b in node.inputs]
        if any(b is None for b in bottoms):
            continue  # a bottom this run did not return (streamed groups): left as it is
        again = layer_forward(node, [np.asarray(b, dtype=np.float64) for b in bottoms])
        if not all(_within(mine[t], a, limit(t)) for t, a in zip(tops, again)):
            continue
        fixed.update(mine)
        rows, judged = mine[tops[0]].shape[0], theirs[tops[0]].shape[0]
        notes.append(
            f'layer "{node.name}": its {rows} rows differ from the float64 judge\'s {judged}, and '
            "the layer computed in float64 on this back end's own bottoms gives this back end's "
            "rows: the boxes kept turn on scores rounded before it (ties at the cut); the judge "
            "was rerun with this back end's rows for the values after it"
        )
    return fixed, notes
