"""caffe.draw: BVLC's draw.py functions (labels written out by hand from its rules), its phase
rule, pydot graphs where pydot is installed, and files drawn on a plain install (no Graphviz)
through ``import caffe`` after install()."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET

import pytest
from google.protobuf import text_format

from caffe_compat.draw import dot as dot_module
from caffe_compat.proto import caffe_pb2
from caffe_compat.pycaffe import draw

NET = """
name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { source: "x" batch_size: 16 } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST }
        input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } shape { dim: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 6 kernel_size: 5 stride: 2 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" exclude { phase: TEST } }
"""


@pytest.fixture
def net() -> caffe_pb2.NetParameter:
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def test_labels_as_draw_py_writes_them(net):
    conv, pool, relu, ip = net.layer[2], net.layer[4], net.layer[3], net.layer[5]
    assert draw.get_layer_label(conv, "LR") == (
        '"conv\\n(Convolution)\\nkernel size: 5\\nstride: 2\\npad: 0"'
    )
    assert (
        draw.get_layer_label(pool, "TB") == '"pool (Pooling MAX) kernel size: 2 stride: 2 pad: 0"'
    )
    assert draw.get_layer_label(relu, "LR") == '"relu\\n(ReLU)"'
    assert draw.get_layer_label(conv, "BT", display_lrm=True).endswith(' lr mult: 1.0, 2.0"')
    assert draw.get_layer_label(ip, "LR", display_lrm=True).endswith('\\nlr mult: 1.0, 1.0"')
    assert draw.get_edge_label(net.layer[0]) == "Batch 16"
    assert draw.get_edge_label(conv) == "6" and draw.get_edge_label(relu) == '""'
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.choose_color_by_layertype("ReLU") == "#6495ED"
    with pytest.raises(ValueError, match="ReLU layers do not have a learning rate multiplier"):
        draw.get_layer_lr_mult(relu)


def test_phase_rule_and_both_rules(net):
    assert [draw._included(x, caffe_pb2.TEST) for x in net.layer] == [
        False,
        True,
        True,
        True,
        True,
        True,
        False,
    ]
    assert [draw._included(x, caffe_pb2.TRAIN) for x in net.layer] == [
        True,
        False,
        True,
        True,
        True,
        True,
        True,
    ]
    bad = text_format.Parse(
        'layer { name: "x" type: "ReLU" include { phase: TEST } exclude { phase: TRAIN } }',
        caffe_pb2.NetParameter(),
    )
    with pytest.raises(ValueError, match="layer x has both include and exclude specified"):
        draw.draw_net(bad, "LR", "svg", phase=caffe_pb2.TEST)


def test_plain_install_draws_files_through_import_caffe(net, tmp_path, monkeypatch):
    import caffe_compat.pycaffe as shim

    monkeypatch.setattr(dot_module.shutil, "which", lambda name: None)
    shim.install()
    try:
        import caffe
        import caffe.draw

        target = tmp_path / "net.svg"
        caffe.draw.draw_net_to_file(net, str(target), "TB", phase=caffe.TEST)
    finally:
        shim.uninstall()
    root = ET.parse(target).getroot()
    names = [
        g.get("data-name")
        for g in root.iter("{http://www.w3.org/2000/svg}g")
        if g.get("class") == "layer"
    ]
    assert names == ["data", "conv", "relu", "pool", "ip"]
    png = draw.draw_net(net, "LR", "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert draw.draw_net(net, "LR", "raw").startswith(b'digraph "small"')
    with pytest.raises(Exception, match=r"without Graphviz caffe\.draw writes svg, png or dot"):
        draw.draw_net(net, "LR", "pdf")


def test_pydot_graph_as_caffe_builds_it(net):
    pydot = pytest.importorskip("pydot", reason="pydot not installed")
    graph = draw.get_pydot_graph(net, "LR", phase=caffe_pb2.TRAIN)
    assert isinstance(graph, pydot.Dot) and graph.get_rankdir() == "LR"
    names = {n.get_name() for n in graph.get_nodes()}
    assert '"conv\\n(Convolution)\\nkernel size: 5\\nstride: 2\\npad: 0"' in names
    assert {"data", "conv", "pool", "ip", "label", "loss"} <= names  # blobs named by themselves
    assert len(graph.get_edges()) == 13  # a bottom or top each
    styles = {n.get_name(): (n.get_shape(), n.get_fillcolor()) for n in graph.get_nodes()}
    assert styles['"relu\\n(ReLU)"'] == ("record", "#90EE90")
    assert styles["pool"] == ("octagon", "#E0E0E0")  # a bottom last
    assert styles["loss"] == (None, None)  # only ever a top: draw.py leaves it unstyled
    if shutil.which("dot"):
        assert draw.draw_net(net, "LR", "svg").lstrip().startswith(b"<?xml")
