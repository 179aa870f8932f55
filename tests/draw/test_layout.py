"""The built-in layered layout: no two nodes overlap, every edge runs with the flow (the back edge
of an in-place layer excepted), routes start and end on their nodes, directions map correctly,
and crossings a barycentre ordering removes are removed."""

from __future__ import annotations

import itertools

import pytest
from _paths import ROOT

from caffe_compat.draw.layout import _crossings, layout
from caffe_compat.draw.model import net_drawing, read_definition
from caffe_compat.draw.svg import place


def overlapping(nodes) -> list[tuple[int, int]]:
    found = []
    for (i, a), (j, b) in itertools.combinations(enumerate(nodes), 2):
        if abs(a.x - b.x) * 2 < a.width + b.width and abs(a.y - b.y) * 2 < a.height + b.height:
            found.append((i, j))
    return found


@pytest.fixture(scope="module")
def caffenet():
    return net_drawing(read_definition(ROOT / "zoo/bvlc_reference_caffenet.prototxt"), rankdir="TB")


def test_no_overlaps_and_everything_on_the_canvas(caffenet):
    placed = place(caffenet)
    assert not overlapping(placed.nodes)
    for node in placed.nodes:
        assert node.x - node.width / 2 >= 0 and node.x + node.width / 2 <= placed.width
        assert node.y - node.height / 2 >= 0 and node.y + node.height / 2 <= placed.height


def test_edges_run_top_to_bottom_but_an_in_place_layer_writes_back_up(caffenet):
    placed = place(caffenet)
    ids = {s.id: i for i, s in enumerate(caffenet.shapes)}
    in_place = {s.id for s in caffenet.shapes if s.in_place}
    for edge, route in zip(caffenet.edges, placed.routes, strict=True):
        source, target = placed.nodes[ids[edge.source]], placed.nodes[ids[edge.target]]
        start, end = route.points[0], route.points[-1]
        assert start[1] == pytest.approx(
            source.y + source.height / 2 * (1, -1)[edge.source in in_place]
        )
        assert end[1] == pytest.approx(
            target.y - target.height / 2 * (1, -1)[edge.source in in_place]
        )
        if edge.source in in_place:  # relu -> the blob it rewrites: drawn upwards
            assert target.y < source.y
        else:
            assert target.y > source.y


def test_directions_transpose_and_flip():
    sizes, edges = [(40, 20), (60, 20), (40, 30)], [(0, 1), (1, 2)]
    tb, lr = layout(sizes, edges, "TB"), layout(sizes, edges, "LR")
    bt, rl = layout(sizes, edges, "BT"), layout(sizes, edges, "RL")
    assert [n.y for n in tb.nodes] == sorted(n.y for n in tb.nodes)
    assert [n.x for n in lr.nodes] == sorted(n.x for n in lr.nodes)
    assert [n.y for n in bt.nodes] == sorted((n.y for n in bt.nodes), reverse=True)
    assert [n.x for n in rl.nodes] == sorted((n.x for n in rl.nodes), reverse=True)
    assert (tb.width, tb.height) == (bt.width, bt.height)
    assert (lr.width, lr.height) == (rl.width, rl.height)
    assert [(n.width, n.height) for n in lr.nodes] == sizes  # sizes are the nodes' own


def test_long_edges_pass_through_each_rank():
    # 0 -> 1 -> 2 -> 3 and a skip 0 -> 3: the skip gets two bends between its ends
    placed = layout([(30, 20)] * 4, [(0, 1), (1, 2), (2, 3), (0, 3)], "TB")
    skip = placed.routes[3]
    assert len(skip.points) == 4
    ys = [p[1] for p in skip.points]
    assert ys == sorted(ys)


def test_ordering_removes_a_crossing_that_definition_order_makes():
    # two chains a0->b1, a1->b0 drawn in definition order cross once; the sweeps untangle them
    sizes = [(30, 20)] * 4
    edges = [(0, 3), (1, 2)]
    assert _crossings([0, 1], [2, 3], edges) == 1
    placed = layout(sizes, edges, "TB")
    (a0, a1, b0, b1) = (placed.nodes[i].x for i in range(4))
    assert (a0 < a1) == (b1 < b0)


def test_layout_of_a_cycle_terminates():
    placed = layout([(20, 20)] * 3, [(0, 1), (1, 2), (2, 0)], "TB")
    assert len(placed.routes) == 3 and not overlapping(placed.nodes)


def test_many_long_edges_run_straight_instead_of_growing_the_layout(monkeypatch):
    from caffe_compat.draw import layout as module

    # a chain of 40 nodes, every one also fed by node 0: 741 placeholder points
    edges = [(i, i + 1) for i in range(39)] + [(0, i) for i in range(2, 40)]
    routed = layout([(20, 20)] * 40, edges, "TB")
    assert max(len(r.points) for r in routed.routes) == 40  # 0 -> 39: 38 bends
    monkeypatch.setattr(module, "MAX_DUMMIES", 100)
    straight = layout([(20, 20)] * 40, edges, "TB")
    assert max(len(r.points) for r in straight.routes) == 2
    assert not overlapping(straight.nodes)


def test_crossings_counted_as_by_definition():
    import random

    rng = random.Random(5)
    upper, lower = list(range(9)), list(range(9, 20))
    rng.shuffle(lower)
    links = [(rng.choice(upper), rng.choice(lower)) for _ in range(40)]
    pos_u = {n: i for i, n in enumerate(upper)}
    pos_l = {n: i for i, n in enumerate(lower)}
    by_definition = sum(
        1
        for (a1, b1), (a2, b2) in itertools.combinations(links, 2)
        if (pos_u[a1] - pos_u[a2]) * (pos_l[b1] - pos_l[b2]) < 0
    )
    assert _crossings(upper, lower, links) == by_definition > 0
