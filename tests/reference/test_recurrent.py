"""Recurrent layers in float64: values worked out by hand from the C++ formulas (lstm_unit_layer.cpp,
rnn_layer.cpp, junhyukoh/caffe-lstm's kernels), the backward against central differences
(Caffe's GradientChecker), and forward and backward against real BVLC Caffe's recorded blobs
(data/recurrent, recorded by data/recurrent/record.py).

Tolerance against real Caffe: Caffe computes in float32 through at most 6 steps of 4-unit
products, so each value is within 1e-5 x the blob's largest magnitude (plus 1e-6) of float64.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from caffe_compat import registry
from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward
from caffe_compat.reference._base import BackwardContext

DATA = Path(__file__).resolve().parent / "data" / "recurrent"


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


UNIT = 'layer { name: "u" type: "LSTMUnit" bottom: "c" bottom: "g" bottom: "cont" top: "c1" top: "h1" }'


def test_lstm_unit_by_hand(run_layers):
    """Stream 0 continues (cont 1), stream 1 starts a sequence (cont 0: the forget gate is 0)."""
    c = np.array([[[1.0], [2.0]]])
    g = np.array([[[0.0, 1.0, -1.0, 0.5], [0.3, 5.0, 0.0, -0.2]]])
    out = run_layers(UNIT, c=c, g=g, cont=np.array([[1.0, 0.0]]))
    c0 = sig(1.0) * 1.0 + sig(0.0) * math.tanh(0.5)
    c1 = 0.0 * 2.0 + sig(0.3) * math.tanh(-0.2)
    np.testing.assert_allclose(out["c1"].ravel(), [c0, c1], rtol=1e-12)
    h = [sig(-1.0) * math.tanh(c0), sig(0.0) * math.tanh(c1)]
    np.testing.assert_allclose(out["h1"].ravel(), h, rtol=1e-12)


LSTM1 = (
    'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
    "recurrent_param { num_output: 1 } }"
)


def test_lstm_two_steps_by_hand(run_layers):
    """One unit, one stream: W_xc = (1, 2, 3, 4) (gates i, f, o, g), b_c = 0.1, W_hc = 0.5."""
    w_x, b, w_h = np.array([[1.0], [2], [3], [4]]), np.full(4, 0.1), np.full((4, 1), 0.5)
    x = np.array([[[0.5]], [[-1.0]]])
    out = run_layers(LSTM1, {"l": [w_x, b, w_h]}, x=x, cont=np.array([[0.0], [1.0]]))["h"]
    # t = 0: the state carried in is zero
    z = [w * 0.5 + 0.1 for w in (1, 2, 3, 4)]
    c = sig(z[0]) * math.tanh(z[3])
    h = sig(z[2]) * math.tanh(c)
    # t = 1: cont 1, so h_0 enters the gates and c_0 the cell
    z = [w * -1.0 + 0.1 + 0.5 * h for w in (1, 2, 3, 4)]
    c2 = sig(z[1]) * c + sig(z[0]) * math.tanh(z[3])
    h2 = sig(z[2]) * math.tanh(c2)
    np.testing.assert_allclose(out.ravel(), [h, h2], rtol=1e-12)


def test_cont_zero_restarts_the_sequence(run_layers):
    """From a step with cont 0 on, a stream computes what a fresh net computes on the rest."""
    rng = np.random.default_rng(0)
    blobs = {"l": [rng.normal(size=s) for s in [(8, 3), (8,), (8, 2)]]}
    layer = LSTM1.replace("num_output: 1", "num_output: 2")
    x = rng.normal(size=(6, 1, 3))
    cont = np.array([[0.0], [1], [1], [0], [1], [1]])
    whole = run_layers(layer, blobs, x=x, cont=cont)["h"]
    tail = run_layers(layer, blobs, x=x[3:], cont=cont[3:])["h"]
    np.testing.assert_allclose(whole[3:], tail, rtol=1e-12)
    carried = cont.copy()
    carried[3] = 1  # without the reset, the state of steps 0-2 reaches step 3
    assert not np.allclose(run_layers(layer, blobs, x=x, cont=carried)["h"][3:], tail)


def test_rnn_one_step_by_hand(run_layers):
    layer = (
        'layer { name: "r" type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" top: "o" top: "hT" '
        "recurrent_param { num_output: 1 expose_hidden: true } }"
    )
    blobs = {
        "r": [
            np.array([[2.0]]),
            np.array([0.5]),
            np.array([[-1.0]]),
            np.array([[3.0]]),
            np.array([0.1]),
        ]
    }
    out = run_layers(
        layer, blobs, x=np.array([[[0.25]]]), cont=np.array([[1.0]]), h0=np.array([[[0.4]]])
    )
    h = math.tanh(2 * 0.25 + 0.5 - 1.0 * 0.4)
    np.testing.assert_allclose(out["hT"].ravel(), [h], rtol=1e-12)
    np.testing.assert_allclose(out["o"].ravel(), [math.tanh(3 * h + 0.1)], rtol=1e-12)


def test_caffe_lstm_fork_reads_clip_rows_t_plus_n(run_layers):
    """junhyukoh/caffe-lstm with batch_size 2: stream n's marker at step t is clip row t + n."""
    layer = (
        'layer { name: "l" type: "Lstm" bottom: "x" bottom: "clip" top: "h" '
        "lstm_param { num_output: 1 batch_size: 2 } }"
    )
    w_i, w_h, b = np.array([[1.0], [1], [1], [1]]), np.full((4, 1), 2.0), np.zeros(4)
    x = np.array([[1.0], [0.5], [0.2], [0.1]])  # T = 2 steps of 2 streams, time-major rows
    clip = np.array([[0.0], [1.0], [0.0], [1.0]])  # rows read: t0 -> (0, 1), t1 -> (1, 0)
    h = run_layers(layer, {"l": [w_i, w_h, b]}, x=x, clip=clip)["h"].ravel()
    # step 0: stream 0 reads clip[0] = 0, stream 1 reads clip[1] = 1 (zero state either way)
    steps = []
    for v in (1.0, 0.5):
        c = sig(v) * math.tanh(v)
        steps.append((sig(v) * math.tanh(c), c))
    # step 1: stream 0 reads clip[1] = 1 (continues), stream 1 reads clip[2] = 0 (restarts)
    h_prev, c_prev = steps[0]
    z = 0.2 + 2 * h_prev
    c = sig(z) * c_prev + sig(z) * math.tanh(z)
    restart = sig(0.1) * math.tanh(sig(0.1) * math.tanh(0.1))
    np.testing.assert_allclose(
        h, [steps[0][0], steps[1][0], sig(z) * math.tanh(c), restart], rtol=1e-12
    )


def test_continuation_indicator(run_layers):
    layer = (
        'layer { name: "ci" type: "ContinuationIndicator" bottom: "data" top: "cont" '
        "continuation_indicator_param { time_step: 3 batch_size: 2 } }"
    )
    out = run_layers(layer, data=np.zeros((1, 4)))["cont"]
    np.testing.assert_array_equal(out, [[0, 0], [1, 1], [1, 1]])


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


def test_lstm_backward_with_static_input(grad_check):
    rng = np.random.default_rng(1)
    layer = (
        'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" bottom: "xs" top: "h" '
        "recurrent_param { num_output: 2 } }"
    )
    blobs = {"l": [rng.normal(0, 0.5, s) for s in [(8, 3), (8,), (8, 4), (8, 2)]]}
    cont = np.array([[0.0, 1], [1, 1], [1, 0], [1, 1.0]])
    report = grad_check(
        layer, blobs, x=rng.normal(size=(4, 2, 3)), cont=cont, xs=rng.normal(size=(2, 2, 2))
    )
    assert report.checked == 4 * 2 * 3 + 2 * 4 + 8 * 3 + 8 + 8 * 4 + 8 * 2


def test_rnn_backward_with_static_input(grad_check):
    rng = np.random.default_rng(2)
    layer = (
        'layer { name: "r" type: "RNN" bottom: "x" bottom: "cont" bottom: "xs" top: "o" '
        "recurrent_param { num_output: 3 } }"
    )
    sizes = [(3, 2), (3,), (3, 2), (3, 3), (3, 3), (3,)]
    cont = np.array([[0.0, 0], [1, 1], [0, 1], [1, 1.0]])
    grad_check(
        layer,
        {"r": [rng.normal(0, 0.6, s) for s in sizes]},
        x=rng.normal(size=(4, 2, 2)),
        cont=cont,
        xs=rng.normal(size=(2, 2)),
    )


def test_lstm_unit_backward(grad_check):
    rng = np.random.default_rng(3)
    grad_check(
        UNIT,
        c=rng.normal(size=(1, 3, 2)),
        g=rng.normal(size=(1, 3, 8)),
        cont=np.array([[1.0, 0.0, 1.0]]),
    )


def test_caffe_lstm_fork_backward_without_clip(grad_check):
    rng = np.random.default_rng(4)
    layer = (
        'layer { name: "l" type: "Lstm" bottom: "x" top: "h" '
        "lstm_param { num_output: 2 batch_size: 2 } }"
    )
    blobs = {"l": [rng.normal(0, 0.5, s) for s in [(8, 3), (8, 2), (8,)]]}
    grad_check(layer, blobs, x=rng.normal(size=(6, 3)))


# --- real BVLC Caffe ------------------------------------------------------------------------------


def _recorded(case: str) -> dict[str, np.ndarray]:
    with np.load(DATA / f"{case}.npz") as data:
        return {k: data[k] for k in data.files}


def _limit(array: np.ndarray) -> float:
    return 1e-5 * float(np.abs(array).max(initial=0.0)) + 1e-6


@pytest.mark.parametrize("case", ["lstm", "rnn", "lstm_unit"])
def test_forward_and_backward_match_real_caffe(case):
    """Every blob, every input diff (0 for the exposed h_0/c_0, as Caffe leaves them; none for
    cont) and every parameter diff, layer by layer; the random diffs Caffe got on the exposed
    h_T/c_T tops must make no difference, as in recurrent_layer.cpp."""
    rec = _recorded(case)
    graph = load_net(DATA / f"{case}.prototxt").graph
    for node in graph.nodes:
        count = sum(1 for k in rec if k.startswith(f"param/{node.name}/"))
        node.blobs = [rec[f"param/{node.name}/{i}"].astype(np.float64) for i in range(count)]
    inputs = {
        k.split("/", 1)[1]: v.astype(np.float64) for k, v in rec.items() if k.startswith("input/")
    }
    ours = forward(graph, inputs)
    for key in (k for k in rec if k.startswith("data/")):
        blob = key.split("/", 1)[1]
        np.testing.assert_allclose(
            ours[blob], rec[key], rtol=0, atol=_limit(rec[key]), err_msg=blob
        )
    checked = 0
    for node in graph.nodes:
        backward = registry.lookup(node.type, "reference_backward")
        if backward is None:
            continue
        bottoms = [ours[v] for v in node.inputs]
        tops = [ours[v] for v in node.outputs]
        ctx = BackwardContext(
            tuple(b.shape for b in bottoms),
            tuple(t.shape for t in tops),
            tuple(node.blobs),
            outputs=tuple(tops),
            propagate=tuple(True for _ in bottoms),
            param_propagate=tuple(True for _ in node.blobs),
        )
        top_diffs = [rec[f"top_diff/{v}"].astype(np.float64) for v in node.outputs]
        grads, params = backward.fn(node, bottoms, top_diffs, ctx)
        for value, grad in zip(node.inputs, grads):
            want = rec[f"diff/{value}"]
            mine = np.zeros(want.shape) if grad is None else grad
            np.testing.assert_allclose(mine, want, rtol=0, atol=_limit(want), err_msg=value)
            checked += 1
        for i, grad in enumerate(params):
            want = rec[f"param_diff/{node.name}/{i}"]
            np.testing.assert_allclose(
                grad, want, rtol=0, atol=_limit(want), err_msg=f"{node.name} {i}"
            )
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("case", ["lstm", "rnn"])
def test_caffemodel_written_by_caffe_loads(case):
    """The .caffemodel real Caffe saved (its blob order and shapes: W_xc, b_c, W_xc_static, W_hc;
    RNN's W_xh, b_h, W_xh_static, W_hh, W_ho, b_o) loads and reproduces Caffe's tops."""
    rec = _recorded(case)
    loaded = load_net(DATA / f"{case}.prototxt", DATA / f"{case}.caffemodel")
    for node in loaded.graph.nodes:
        for i, blob in enumerate(node.blobs):
            np.testing.assert_array_equal(blob, rec[f"param/{node.name}/{i}"])
    inputs = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("input/")}
    ours = forward(loaded, inputs)
    for key in (k for k in rec if k.startswith("data/")):
        np.testing.assert_allclose(ours[key[5:]], rec[key], rtol=0, atol=_limit(rec[key]))
