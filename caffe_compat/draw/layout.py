"""A small layered layout (Sugiyama's steps), so a net can be drawn without graphviz: break
cycles (an in-place layer's edge back to its blob), rank by longest path, route long edges
through placeholder points, order each rank by barycentres to cut crossings, then place nodes
near the mean of their neighbours without overlaps.

Everything is computed along two axes, *depth* (the rank direction) and *breadth* (across
it), and mapped to x/y at the end for LR, RL, TB or BT.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

RANK_GAP = 36.0  # space between ranks
NODE_GAP = 18.0  # space between nodes of one rank
DUMMY_BREADTH = 8.0  # room a long edge takes where it passes a rank
MARGIN = 12.0
# Placeholder points long edges may take in all; past it (thousands of layers reading one blob)
# long edges run straight, so the layout's size stays linear in the net's.
MAX_DUMMIES = 100_000


@dataclass
class Placed:
    x: float  # centre
    y: float
    width: float
    height: float


@dataclass
class Route:
    source: int
    target: int
    points: list[tuple[float, float]]  # from the source's border to the target's, in x/y


@dataclass
class Layout:
    nodes: list[Placed]
    routes: list[Route]
    width: float
    height: float
    rankdir: str


def _break_cycles(count: int, edges: Sequence[tuple[int, int]]) -> list[bool]:
    """Which edges to reverse so the rest is acyclic: those closing a cycle in a depth-first
    walk from the nodes in definition order (iterative: nets have thousands of nodes)."""
    out: list[list[int]] = [[] for _ in range(count)]
    for index, (a, _) in enumerate(edges):
        out[a].append(index)
    has_input = {b for _, b in edges}
    state = [0] * count  # 0 unseen, 1 on the stack, 2 done
    reverse = [False] * len(edges)
    roots = [n for n in range(count) if n not in has_input]
    for root in [*roots, *range(count)]:  # from the sources first
        if state[root]:
            continue
        state[root] = 1
        stack = [(root, 0)]
        while stack:
            node, at = stack[-1]
            if at == len(out[node]):
                state[node] = 2
                stack.pop()
                continue
            stack[-1] = (node, at + 1)
            edge = out[node][at]
            target = edges[edge][1]
            if state[target] == 1:
                reverse[edge] = True
            elif state[target] == 0:
                state[target] = 1
                stack.append((target, 0))
    return reverse


def _ranks(count: int, dag: Sequence[tuple[int, int]]) -> list[int]:
    """Longest path from the sources (Kahn's order)."""
    succ: list[list[int]] = [[] for _ in range(count)]
    indegree = [0] * count
    for a, b in dag:
        succ[a].append(b)
        indegree[b] += 1
    rank = [0] * count
    ready = [n for n in range(count) if indegree[n] == 0]
    while ready:
        node = ready.pop()
        for nxt in succ[node]:
            rank[nxt] = max(rank[nxt], rank[node] + 1)
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    return rank


def _crossings(upper: list[int], lower: list[int], links: list[tuple[int, int]]) -> int:
    """Edge crossings between two ordered ranks: inversions of the lower ends once the edges
    are sorted by their upper ends (a Fenwick tree: E log V, not E squared)."""
    pos_u = {n: i for i, n in enumerate(upper)}
    pos_l = {n: i for i, n in enumerate(lower)}
    pairs = sorted((pos_u[a], pos_l[b]) for a, b in links if a in pos_u and b in pos_l)
    tree = [0] * (len(lower) + 1)
    count = 0
    for seen, (_, b) in enumerate(pairs):
        i, not_above = b + 1, 0  # how many earlier lower ends are <= b
        while i > 0:
            not_above += tree[i]
            i -= i & -i
        count += seen - not_above
        i = b + 1
        while i <= len(lower):
            tree[i] += 1
            i += i & -i
    return count


def _order(rank: list[int], links: list[tuple[int, int]], sweeps: int = 8) -> list[list[int]]:
    """Nodes of each rank, ordered by barycentre sweeps; the ordering with fewest crossings."""
    depth = max(rank, default=-1) + 1
    layers: list[list[int]] = [[] for _ in range(depth)]
    for node, r in enumerate(rank):
        layers[r].append(node)
    up: dict[int, list[int]] = {}
    down: dict[int, list[int]] = {}
    for a, b in links:
        down.setdefault(a, []).append(b)
        up.setdefault(b, []).append(a)
    by_rank = [[(a, b) for a, b in links if rank[a] == r] for r in range(depth)]

    def total(order: list[list[int]]) -> int:
        return sum(_crossings(order[r], order[r + 1], by_rank[r]) for r in range(depth - 1))

    best, best_count = [list(layer) for layer in layers], total(layers)
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        indices = range(1, depth) if downward else range(depth - 2, -1, -1)
        for r in indices:
            ref = layers[r - 1] if downward else layers[r + 1]
            pos = {n: i for i, n in enumerate(ref)}
            neighbours = up if downward else down
            keyed = []
            for i, node in enumerate(layers[r]):
                near = [pos[n] for n in neighbours.get(node, ()) if n in pos]
                keyed.append((sum(near) / len(near) if near else i, i, node))
            layers[r] = [node for _, _, node in sorted(keyed)]
        count = total(layers)
        if count < best_count:
            best, best_count = [list(layer) for layer in layers], count
    return best


def _place_rank(nodes: list[int], wanted: list[float], breadth: list[float]) -> list[float]:
    """Centres as near ``wanted`` as the order and the gaps allow: a left-to-right pass that
    pushes right, a right-to-left one that pushes left, averaged."""
    n = len(nodes)
    gaps = [(breadth[nodes[i - 1]] + breadth[nodes[i]]) / 2 + NODE_GAP for i in range(1, n)]
    right = list(wanted)
    for i in range(1, n):
        right[i] = max(right[i], right[i - 1] + gaps[i - 1])
    left = list(wanted)
    for i in range(n - 2, -1, -1):
        left[i] = min(left[i], left[i + 1] - gaps[i])
    return [(a + b) / 2 for a, b in zip(left, right)]


def _coordinates(
    order: list[list[int]], links: list[tuple[int, int]], breadth: list[float], passes: int = 6
) -> list[float]:
    """Breadth centres: packed, then pulled towards the mean of neighbours, rank by rank."""
    centre = [0.0] * len(breadth)
    for layer in order:
        at = 0.0
        for node in layer:
            centre[node] = at + breadth[node] / 2
            at += breadth[node] + NODE_GAP
    near: dict[int, list[int]] = {}
    for a, b in links:
        near.setdefault(a, []).append(b)
        near.setdefault(b, []).append(a)
    for _ in range(passes):
        for layer in [*order, *reversed(order)]:
            wanted = []
            for node in layer:
                others = near.get(node, [])
                wanted.append(
                    sum(centre[o] for o in others) / len(others) if others else centre[node]
                )
            for node, value in zip(layer, _place_rank(layer, wanted, breadth)):
                centre[node] = value
            # _place_rank can leave a rank overlapping when it averages: repack in order
            for i in range(1, len(layer)):
                gap = (breadth[layer[i - 1]] + breadth[layer[i]]) / 2 + NODE_GAP
                centre[layer[i]] = max(centre[layer[i]], centre[layer[i - 1]] + gap)
    return centre


def layout(
    sizes: Sequence[tuple[float, float]], edges: Sequence[tuple[int, int]], rankdir: str = "TB"
) -> Layout:
    """Place nodes of ``sizes`` (width, height) joined by ``edges`` (source, target)."""
    vertical = rankdir in ("TB", "BT")
    count = len(sizes)
    breadth = [w if vertical else h for w, h in sizes]
    extent = [h if vertical else w for w, h in sizes]
    reverse = _break_cycles(count, edges)
    dag = [(b, a) if flip else (a, b) for (a, b), flip in zip(edges, reverse)]
    dag_unique = list(dict.fromkeys(d for d in dag if d[0] != d[1]))
    rank = _ranks(count, dag_unique)
    # long edges pass each rank through a placeholder node
    links: list[tuple[int, int]] = []
    chains: dict[tuple[int, int], list[int]] = {}
    spans = sum(rank[b] - rank[a] - 1 for a, b in dag_unique)
    for a, b in dag_unique:
        chain = [a]
        for r in range(rank[a] + 1, rank[b] if spans <= MAX_DUMMIES else rank[a] + 1):
            rank.append(r)
            breadth.append(DUMMY_BREADTH)
            extent.append(0.0)
            chain.append(len(rank) - 1)
        chain.append(b)
        links.extend(itertools.pairwise(chain))
        chains[(a, b)] = chain
    order = _order(rank, links)
    centre = _coordinates(order, links, breadth)
    low = min((centre[n] - breadth[n] / 2 for n in range(len(centre))), default=0.0)
    centre = [c - low + MARGIN for c in centre]
    tops, at = [], MARGIN
    for layer in order:
        tops.append(at)
        at += max((extent[n] for n in layer), default=0.0) + RANK_GAP
    span = [max((extent[n] for n in layer), default=0.0) for layer in order]
    middle = [tops[rank[n]] + span[rank[n]] / 2 for n in range(len(rank))]
    total_depth = at - RANK_GAP + MARGIN
    total_breadth = max((centre[n] + breadth[n] / 2 for n in range(len(centre))), default=0) + (
        MARGIN
    )

    def xy(b: float, d: float) -> tuple[float, float]:
        if rankdir in ("BT", "RL"):
            d = total_depth - d
        return (b, d) if vertical else (d, b)

    placed = []
    for n in range(count):
        x, y = xy(centre[n], middle[n])
        placed.append(Placed(x, y, sizes[n][0], sizes[n][1]))
    routes = []
    for index, ((a, b), flip) in enumerate(zip(edges, reverse)):
        s, t = (b, a) if flip else (a, b)
        if s == t:
            continue
        chain = chains[(s, t)]
        points = [(centre[s], middle[s] + extent[s] / 2)]
        points.extend((centre[n], middle[n]) for n in chain[1:-1])
        points.append((centre[t], middle[t] - extent[t] / 2))
        if flip:  # an edge back up (an in-place layer writing its blob): drawn beside the other
            points = [(p[0] + 10.0, p[1]) for p in reversed(points)]
        routes.append(Route(edges[index][0], edges[index][1], [xy(*p) for p in points]))
    width, height = (total_breadth, total_depth) if vertical else (total_depth, total_breadth)
    return Layout(placed, routes, width, height, rankdir)
