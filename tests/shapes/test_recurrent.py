"""Shapes and blob shapes of the recurrent layers (recurrent_layer.cpp, lstm_layer.cpp,
rnn_layer.cpp, lstm_unit_layer.cpp, junhyukoh/caffe-lstm, CRNN's ContinuationIndicator), and
the one-line errors for nets Caffe refuses."""

from __future__ import annotations

import pytest

from caffe_compat import registry
from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net_text


def net(layer: str, **inputs: tuple) -> str:
    tops = " ".join(f'top: "{k}"' for k in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in inputs.values())
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n{layer}'


def shapes_of(text: str, layer: str):
    graph = load_net_text(text).graph
    node = graph.node(layer)
    inputs = [graph.shapes[v] for v in node.inputs]
    rule = registry.lookup(node.type, "shape").fn(node, inputs)
    return [graph.shapes[v] for v in node.outputs], rule.params


def lstm(bottoms: str, tops: str = 'top: "h"', extra: str = "") -> str:
    return (
        f'layer {{ name: "l" type: "LSTM" {bottoms} {tops} '
        f"recurrent_param {{ num_output: 5 {extra} }} }}"
    )


def test_lstm_blobs_follow_the_unrolled_net():
    """W_xc (4H x D, D from axis 2 on), b_c, W_xc_static (4H x Ds), W_hc (4H x H)."""
    text = net(lstm('bottom: "x" bottom: "c" bottom: "s"'), x=(7, 2, 3, 2), c=(7, 2), s=(2, 4, 2))
    tops, params = shapes_of(text, "l")
    assert tops == [(7, 2, 5)]
    assert params == [(20, 6), (20,), (20, 8), (20, 5)]


def test_lstm_exposed_state():
    text = net(
        lstm(
            'bottom: "x" bottom: "c" bottom: "h0" bottom: "c0"',
            'top: "h" top: "hT" top: "cT"',
            "expose_hidden: true",
        ),
        x=(4, 3, 2),
        c=(4, 3),
        h0=(1, 3, 5),
        c0=(1, 3, 5),
    )
    tops, params = shapes_of(text, "l")
    assert tops == [(4, 3, 5), (1, 3, 5), (1, 3, 5)]
    assert params == [(20, 2), (20,), (20, 5)]  # two bottoms beyond x, cont: no x_static


def test_rnn_blobs():
    text = net(
        'layer { name: "r" type: "RNN" bottom: "x" bottom: "c" bottom: "s" top: "o" '
        "recurrent_param { num_output: 3 } }",
        x=(4, 2, 6),
        c=(4, 2),
        s=(2, 5),
    )
    tops, params = shapes_of(text, "r")
    assert tops == [(4, 2, 3)]
    assert params == [(3, 6), (3,), (3, 5), (3, 3), (3, 3), (3,)]


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": (4, 2, 3), "c": (4, 3)}, r"cont\) must be T x N = \(4, 2\)"),
        ({"x": (4, 2, 3), "c": (4, 2), "s": (3, 1)}, r"x_static\) must be N x \.\.\. with N = 2"),
    ],
)
def test_bottoms_caffe_refuses(inputs, message):
    bottoms = " ".join(f'bottom: "{k}"' for k in inputs)
    with pytest.raises(CaffeCompatError, match=message):
        load_net_text(net(lstm(bottoms), **inputs))


def test_exposed_state_needs_its_tops():
    text = net(lstm('bottom: "x" bottom: "c"', extra="expose_hidden: true"), x=(4, 2, 3), c=(4, 2))
    with pytest.raises(CaffeCompatError, match="expose_hidden true needs 3 top"):
        load_net_text(text)


def test_num_output_is_required():
    text = net(lstm('bottom: "x" bottom: "c"').replace("num_output: 5", ""), x=(4, 2), c=(4, 2))
    with pytest.raises(CaffeCompatError, match="num_output must be positive"):
        load_net_text(text)


def test_lstm_unit():
    text = net(
        'layer { name: "u" type: "LSTMUnit" bottom: "c" bottom: "g" bottom: "k" '
        'top: "c1" top: "h1" }',
        c=(1, 3, 2),
        g=(1, 3, 8),
        k=(1, 3),
    )
    assert shapes_of(text, "u") == ([(1, 3, 2), (1, 3, 2)], [])
    with pytest.raises(CaffeCompatError, match=r"1 x N x 4H = \(1, 3, 8\)"):
        load_net_text(text.replace("dim: 8", "dim: 6"))


@pytest.mark.parametrize(
    ("x", "param", "top"),
    [
        ((12, 3), "batch_size: 3", (12, 4)),  # junhyukoh: T*N rows, N = batch_size
        ((6, 1, 2, 2), "", (6, 4)),  # T*N rows of I = count / rows
        ((5, 2, 3), "", (5, 2, 4)),  # caffe_ocr: T x N x I in, T x N x H out
    ],
)
def test_caffe_lstm_fork_layouts(x, param, top):
    text = net(
        f'layer {{ name: "l" type: "Lstm" bottom: "x" top: "h" '
        f"lstm_param {{ num_output: 4 {param} }} }}",
        x=x,
    )
    tops, params = shapes_of(text, "l")
    assert tops == [top]
    i = x[-1] if len(x) == 3 and not param else x[1] * (x[2] * x[3] if len(x) == 4 else 1)
    assert params == [(16, i), (16, 4), (16,)]


def test_caffe_lstm_batch_size_must_divide_the_rows():
    text = net(
        'layer { name: "l" type: "Lstm" bottom: "x" top: "h" '
        "lstm_param { num_output: 4 batch_size: 4 } }",
        x=(6, 3),
    )
    with pytest.raises(CaffeCompatError, match="batch_size 4 must divide the bottom's 6 rows"):
        load_net_text(text)


def test_continuation_indicator():
    text = net(
        'layer { name: "ci" type: "ContinuationIndicator" bottom: "x" top: "cont" '
        "continuation_indicator_param { time_step: 26 batch_size: 2 } }",
        x=(2, 3, 32, 100),
    )
    assert shapes_of(text, "ci") == ([(26, 2)], [])
    with pytest.raises(CaffeCompatError, match="time_step and batch_size must be positive"):
        load_net_text(text.replace("time_step: 26 ", ""))


def test_time_axis_is_never_split_and_cont_gets_no_diff():
    node = load_net_text(net(lstm('bottom: "x" bottom: "c"'), x=(4, 2, 3), c=(4, 2))).graph.node(
        "l"
    )
    facts = registry.facts("LSTM")
    assert facts.mixes_batch(node, (4, 2, 3))
    assert facts.no_backward(node, 1) == "Cannot backpropagate to sequence indicators."
    assert facts.no_backward(node, 0) is None and not facts.force_backward(node, 1)
    # every step's pre-activations and gates (4H each) and cells (H): 9 floats per top value
    assert facts.workspace(node, [(4, 2, 3), (4, 2)], [(4, 2, 5)]) == 4 * 2 * 5 * 9
