"""``optimize``: the graph rewrites ``convert --optimize`` applies before export, in order.

Each pass takes a Graph and returns a new one with the same inputs and outputs and the same
values at those outputs (within float rounding); none mutates its argument.
"""

from __future__ import annotations

from collections.abc import Callable

from ..ir.graph import Graph
from .fold_batchnorm import fold_batchnorm

PASSES: tuple[Callable[[Graph], Graph], ...] = (fold_batchnorm,)


def optimize(graph: Graph) -> Graph:
    """A new graph with every pass in :data:`PASSES` applied; ``graph`` is left as it was."""
    for rewrite in PASSES:
        graph = rewrite(graph)
    return graph
