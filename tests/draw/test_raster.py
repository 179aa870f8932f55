"""PNG without Graphviz: OpenCV paints the built-in layout; the picture decodes, has the layout's
size, shows each type's fill where its box is, and outlines the marked layer."""

from __future__ import annotations

import cv2
import numpy as np
from _paths import ROOT

from caffe_compat.draw.model import net_drawing, read_definition
from caffe_compat.draw.raster import to_png
from caffe_compat.draw.svg import place


def bgr(colour: str) -> tuple[int, int, int]:
    return int(colour[5:7], 16), int(colour[3:5], 16), int(colour[1:3], 16)


def test_png_has_the_layout_size_and_each_box_its_fill():
    drawing = net_drawing(read_definition(ROOT / "zoo/bvlc_alexnet.prototxt"), rankdir="TB")
    drawing = drawing.recoloured(lambda s: None, marked=["conv2"])
    placed = place(drawing)
    image = cv2.imdecode(np.frombuffer(to_png(drawing, placed), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (int(placed.height) + 1, int(placed.width) + 1)
    for shape, node in zip(drawing.shapes, placed.nodes):
        if shape.kind != "layer":
            continue
        # a pixel inside the box, off the text (near its left edge, halfway down)
        x, y = round(node.x - node.width / 2 + 4), round(node.y)
        assert tuple(int(v) for v in image[y, x]) == bgr(shape.fill), shape.name
    conv2 = placed.nodes[[s.name for s in drawing.shapes].index("conv2")]
    edge = image[round(conv2.y), round(conv2.x - conv2.width / 2) + 1]
    assert tuple(int(v) for v in edge) == (32, 0, 176)  # the heavy outline
