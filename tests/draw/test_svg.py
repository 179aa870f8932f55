"""The built-in SVG: well-formed XML with one group per layer and blob and one path per edge,
names from files escaped (never markup), ids prefixed, the marked layer outlined."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from caffe_compat.draw.model import net_drawing
from caffe_compat.draw.svg import measure, to_svg
from caffe_compat.io.prototxt import parse_text
from caffe_compat.proto import caffe_pb2

NS = {"s": "http://www.w3.org/2000/svg"}
HOSTILE = """
name: "n<&>"
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "</svg><script>alert(1)</script>" type: "ReLU" bottom: "x" top: "y\\x1b[2J" }
layer { name: "fc" type: "InnerProduct" bottom: "y\\x1b[2J" top: "z" inner_product_param { num_output: 3 } }
"""


def drawing(rankdir: str = "TB"):
    net = caffe_pb2.NetParameter()
    parse_text(HOSTILE, net)
    return net_drawing(net, rankdir=rankdir)


def test_groups_paths_and_labels():
    d = drawing()
    root = ET.fromstring(to_svg(d))
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and root.get("class") == "net-drawing"
    layers = root.findall(".//s:g[@class='layer']", NS)
    blobs = root.findall(".//s:g[@class='blob']", NS)
    assert [g.get("data-name") for g in layers] == [s.name for s in d.layers()]
    assert len(blobs) == 3 and all(g.find("s:ellipse", NS) is not None for g in blobs)
    assert all(g.find("s:rect", NS) is not None for g in layers)
    assert len(root.findall(".//s:g[@class='edges']/s:path", NS)) == len(d.edges)
    texts = ["".join(t.itertext()) for t in layers[2].findall("s:text", NS)]
    assert texts == ["fc", "(InnerProduct)"]
    assert "3" in ["".join(t.itertext()) for t in root.findall("s:text", NS)]  # the edge label


def test_names_from_files_are_text_not_markup():
    text = to_svg(drawing())
    root = ET.fromstring(text)  # parses: nothing broke out of its element
    assert not root.findall(".//s:script", NS) and "<script>" not in text
    relu = root.findall(".//s:g[@class='layer']", NS)[1]
    assert relu.get("data-name") == "</svg><script>alert(1)</script>"
    assert "\x1b" not in text and "\\x1b" in text  # control characters shown escaped


def test_prefix_keeps_two_drawings_apart_and_marked_layers_are_outlined():
    d = drawing().recoloured(lambda s: None, marked=["fc"])
    root = ET.fromstring(to_svg(d, prefix="second"))
    assert root.get("id") == "second"
    assert root.find(".//s:marker", NS).get("id") == "second-arrow"
    marked = root.findall(".//s:g[@class='layer marked']", NS)
    assert [g.get("data-name") for g in marked] == ["fc"]
    assert marked[0].find("s:rect", NS).get("stroke-width") == "3.5"


def test_boxes_fit_their_labels_in_either_direction():
    for rankdir in ("TB", "LR"):
        root = ET.fromstring(to_svg(drawing(rankdir)))
        assert root.get("data-rankdir") == rankdir
        for group in root.findall(".//s:g[@class='layer']", NS):
            rect = group.find("s:rect", NS)
            longest = max(len("".join(t.itertext())) for t in group.findall("s:text", NS))
            assert float(rect.get("width")) >= longest * 7.0
    shape = drawing().layers()[2]
    assert measure(shape) == (len("(InnerProduct)") * 7.0 + 16.0, 2 * 15.0 + 10.0)
