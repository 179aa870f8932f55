"""DOT text: draw_net.py's graph (boxes, ovals, labelled top edges) quoted safely; Graphviz's dot
program renders it where installed, and a missing program is one clear line."""

from __future__ import annotations

import shutil

import pytest

from caffe_compat.draw import dot as dot_module
from caffe_compat.draw.dot import quote, run_graphviz, to_dot
from caffe_compat.draw.model import Drawing, Edge, Shape
from caffe_compat.errors import CaffeCompatError


def small() -> Drawing:
    drawing = Drawing('n"1', rankdir="TB")
    drawing.shapes = [
        Shape("layer:a", "layer", ["a\\b", "(Convolution)"], "#FF5050", "a\\b", "Convolution"),
        Shape("blob:x", "blob", ['x"y'], "#E0E0E0", 'x"y', note="ratio 2", marked=True),
    ]
    drawing.edges = [Edge("layer:a", "blob:x", "96")]
    return drawing


def test_dot_text():
    text = to_dot(small())
    assert text.startswith('digraph "n\\"1" {\n  rankdir=TB;')
    assert '"layer:a" [label="a\\\\b\\n(Convolution)", fillcolor="#FF5050", shape=box' in text
    assert '"blob:x" [label="x\\"y", fillcolor="#E0E0E0", shape=ellipse, style=filled' in text
    assert 'penwidth=3.5, color="#B00020", tooltip="ratio 2"' in text
    assert '"layer:a" -> "blob:x" [label="96"];' in text
    assert quote("a\nb\x1b") == '"a\\\\x0ab\\\\x1b"'  # shown escaped, never a raw line break


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) not installed")
def test_graphviz_renders_the_text():
    svg = run_graphviz(to_dot(small()), "svg").decode()
    assert "<svg" in svg and "Convolution" in svg and "x&quot;y" in svg


def test_missing_graphviz_is_one_line(monkeypatch):
    monkeypatch.setattr(dot_module.shutil, "which", lambda name: None)
    with pytest.raises(CaffeCompatError, match="Graphviz's dot program is not installed"):
        run_graphviz("digraph {}", "svg")


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) not installed")
def test_graphviz_failure_is_one_line():
    with pytest.raises(CaffeCompatError, match=r"Graphviz's dot failed: .*syntax"):
        run_graphviz("digraph { a -> }", "svg")
