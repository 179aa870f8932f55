"""Which fork's PriorBox a net was written for, settled from its heads' box count
(shapes/detection.py: settle_prior_layouts, run by the loader when BVLC's count disagrees)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.dialects import settle
from caffe_compat.ir.load import load_net_text
from caffe_compat.proto import caffe_pb2

Layout = caffe_pb2.PriorBoxParameter.Layout


def ssd_net(prior: str, boxes: int, hw: tuple[int, int] = (2, 2)) -> str:
    """A map, loc/conf heads predicting ``boxes`` boxes (2 classes), one PriorBox, the output."""
    h, w = hw
    return (
        'layer { name: "in" type: "Input" top: "map" top: "data" top: "loc" top: "conf" '
        f"input_param {{ shape {{ dim: 1 dim: 1 dim: {h} dim: {w} }} "
        "shape { dim: 1 dim: 3 dim: 64 dim: 64 } "
        f"shape {{ dim: 1 dim: {boxes * 4} }} shape {{ dim: 1 dim: {boxes * 2} }} }} }}\n"
        'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" '
        f"prior_box_param {{ {prior} }} }}\n"
        'layer { name: "cat" type: "Concat" bottom: "pb" top: "priors" concat_param { axis: 2 } }\n'
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" '
        'bottom: "priors" top: "det" detection_output_param { num_classes: 2 '
        "background_label_id: 0 nms_param { nms_threshold: 0.45 } } }\n"
    )


def layout_of(loaded) -> int:
    return loaded.graph.node("pb").param.prior_box_param.layout


@pytest.mark.parametrize("strict", [True, False])
def test_textboxes_settled_from_twice_the_priors(strict):
    # min_size 8 and ratios 1, 2, 3 (no flip): 3 priors per cell in BVLC's code, 6 in TextBoxes'
    prior = "min_size: 8 aspect_ratio: 2 aspect_ratio: 3 flip: false"
    loaded = load_net_text(ssd_net(prior, 2 * 2 * 6), strict=strict)
    assert layout_of(loaded) == Layout.TEXTBOXES
    assert any("TextBoxes" in note for note in loaded.dialects)
    assert loaded.graph.shapes["pb"] == (1, 2, 2 * 2 * 6 * 4)


def test_faceboxes_settled_from_21_priors():
    loaded = load_net_text(ssd_net("min_size: 32 min_size: 64 min_size: 128", 2 * 2 * 21))
    assert layout_of(loaded) == Layout.FACEBOXES
    assert any("FaceBoxes" in note for note in loaded.dialects)


def test_bvlc_count_stays_ssd():
    loaded = load_net_text(ssd_net("min_size: 32 min_size: 64 min_size: 128", 2 * 2 * 3))
    assert layout_of(loaded) == Layout.SSD
    assert loaded.dialects == []


def test_a_count_no_fork_makes_is_still_refused():
    with pytest.raises(CaffeCompatError, match="more than BVLC's PriorBox makes"):
        load_net_text(ssd_net("min_size: 32 min_size: 64 min_size: 128", 2 * 2 * 5))


NORMALIZE_INPUT = (
    'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 } } }\n'
)


def test_happynear_normalize_is_read_from_its_own_field():
    """normalize_param (happynear/caffe-windows, field 214) is no longer skipped as unknown and
    the layer is not read as SSD's with a scale blob; a 2-D bottom gives a 4-D top."""
    text = NORMALIZE_INPUT + (
        'layer { name: "n" type: "Normalize" bottom: "x" top: "n" top: "norm" '
        'normalize_param { normalize_type: "L2" } }'
    )
    loaded = load_net_text(text)
    assert loaded.graph.shapes["n"] == (2, 8, 1, 1) and loaded.graph.shapes["norm"] == (2, 1, 1, 1)
    assert not loaded.graph.node("n").blobs
    layer = caffe_pb2.LayerParameter.FromString(loaded.net.layer[1].SerializeToString())
    assert layer.HasField("normalize_param") and not layer.HasField("norm_param")
    number = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["normalize_param"].number
    assert number == 214


@pytest.mark.parametrize(
    ("tops", "blobs", "happynear"),
    [('top: "n" top: "norm"', None, True), ('top: "n"', 0, True), ('top: "n"', 1, False)],
)
def test_a_normalize_naming_neither_message_is_settled(tops, blobs, happynear):
    text = f'layer {{ name: "n" type: "Normalize" bottom: "x" {tops} }}'
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    notes = settle(net, None if blobs is None else {"n": blobs})
    assert net.layer[0].HasField("normalize_param") == happynear
    assert bool(notes) == happynear and (not notes or "happynear" in notes[0])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ('normalize_param { normalize_type: "L3" }', '"L3" is not "L2" or "L1"'),
        ("normalize_param { } norm_param { }", "sets both"),
    ],
)
def test_bad_happynear_normalize_settings_are_one_line(fields, message):
    text = (
        NORMALIZE_INPUT + f'layer {{ name: "n" type: "Normalize" bottom: "x" top: "n" {fields} }}'
    )
    with pytest.raises(CaffeCompatError, match=message):
        load_net_text(text)


def test_ssd_normalize_keeps_one_top():
    text = NORMALIZE_INPUT + (
        'layer { name: "n" type: "Normalize" bottom: "x" top: "n" top: "m" norm_param { } }'
    )
    with pytest.raises(CaffeCompatError, match="exactly 1 top"):
        load_net_text(text)
