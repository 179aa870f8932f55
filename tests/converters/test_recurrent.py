"""Recurrent layers (LSTM, RNN, LSTMUnit, caffe-lstm's Lstm, ContinuationIndicator): PyTorch and
ONNX Runtime against numpy's version of the C++ formulas written here (and the float64
reference, which layer_check also runs). OpenCV 4 has none of these layers."""

from __future__ import annotations

import numpy as np
import pytest

T, N, D, H = 5, 2, 3, 4


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_lstm(x, cont, w_x, b, w_h, h=None, c=None, static=None):
    """lstm_layer.cpp's unrolled net, step by step: gates i, f, o, g; cont scales h and f."""
    t_len, n = x.shape[:2]
    hidden = w_h.shape[1]
    h = np.zeros((n, hidden)) if h is None else h
    c = np.zeros((n, hidden)) if c is None else c
    out = []
    for t in range(t_len):
        z = x[t].reshape(n, -1) @ w_x.T + b + (cont[t][:, None] * h) @ w_h.T
        if static is not None:
            z = z + static
        i, f, o, g = np.split(z, 4, axis=1)
        c = cont[t][:, None] * _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = _sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def markers(t_len: int, n: int) -> np.ndarray:
    """Sequence starts at step 0 for every stream and inside the sequence for stream 0."""
    cont = np.ones((t_len, n), np.float32)
    cont[0] = 0
    cont[min(2, t_len - 1), 0] = 0
    return cont


def net(layer: str, inputs: dict[str, tuple]) -> str:
    tops = " ".join(f'top: "{k}"' for k in inputs)
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in inputs.values())
    return f'layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n{layer}'


def lstm_blobs(rng, d: int = D, static: int = 0):
    blobs = [rng.uniform(-0.6, 0.6, (4 * H, d)), rng.uniform(-0.6, 0.6, 4 * H)]
    if static:
        blobs.append(rng.uniform(-0.6, 0.6, (4 * H, static)))
    blobs.append(rng.uniform(-0.6, 0.6, (4 * H, H)))
    return [b.astype(np.float32) for b in blobs]


@pytest.mark.parametrize("static", [False, True])
def test_lstm_with_resets_and_static_input(layer_check, static):
    shapes = {"x": (T, N, D), "cont": (T, N)} | ({"xs": (N, 6)} if static else {})
    bottoms = "".join(f'bottom: "{k}" ' for k in shapes)
    prototxt = net(
        f'layer {{ name: "lstm" type: "LSTM" {bottoms}top: "h" '
        f"recurrent_param {{ num_output: {H} }} }}",
        shapes,
    )
    blobs = {"lstm": lstm_blobs(np.random.default_rng(1), static=6 if static else 0)}

    def feeds(t_len):
        t_len = T if static else t_len  # x_static fixes the net's axis 0 (no other T checks)
        rng = np.random.default_rng(t_len)
        arrays = {"x": rng.standard_normal((t_len, N, D)).astype(np.float32)}
        arrays["cont"] = markers(t_len, N)
        if static:
            arrays["xs"] = rng.standard_normal((N, 6)).astype(np.float32)
        return arrays

    def expected(inputs, w):
        b = w["lstm"]
        extra = inputs["xs"] @ b[2].T if static else None
        hs, _, _ = numpy_lstm(inputs["x"], inputs["cont"], b[0], b[1], b[-1], static=extra)
        return {"h": hs}

    layer_check(prototxt, expected, feeds=feeds, blobs=blobs, opencv=False)


def test_lstm_exposed_state(layer_check):
    shapes = {"x": (T, N, D), "cont": (T, N), "h0": (1, N, H), "c0": (1, N, H)}
    prototxt = net(
        'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" bottom: "h0" bottom: "c0" '
        'top: "h" top: "hT" top: "cT" recurrent_param { num_output: 4 expose_hidden: true } }',
        shapes,
    )
    blobs = {"lstm": lstm_blobs(np.random.default_rng(2))}

    def feeds(_):
        rng = np.random.default_rng(7)
        arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        arrays["cont"] = np.ones((T, N), np.float32)  # continue from the given state
        arrays["cont"][3, 1] = 0
        return arrays

    def expected(inputs, w):
        b = w["lstm"]
        hs, h, c = numpy_lstm(inputs["x"], inputs["cont"], *b, h=inputs["h0"][0], c=inputs["c0"][0])
        return {"h": hs, "hT": h[None], "cT": c[None]}

    layer_check(prototxt, expected, feeds=feeds, blobs=blobs, opencv=False)


@pytest.mark.parametrize("expose", [False, True])
def test_rnn(layer_check, expose):
    shapes = {"x": (T, N, D), "cont": (T, N)} | ({"h0": (1, N, H)} if expose else {})
    bottoms = "".join(f'bottom: "{k}" ' for k in shapes)
    tops = 'top: "o" ' + ('top: "hT" ' if expose else "")
    prototxt = net(
        f'layer {{ name: "rnn" type: "RNN" {bottoms}{tops}'
        f"recurrent_param {{ num_output: {H} expose_hidden: {str(expose).lower()} }} }}",
        shapes,
    )
    rng = np.random.default_rng(3)
    sizes = [(H, D), (H,), (H, H), (H, H), (H,)]
    blobs = {"rnn": [rng.uniform(-0.7, 0.7, s).astype(np.float32) for s in sizes]}

    def feeds(_):
        r = np.random.default_rng(9)
        arrays = {k: r.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        arrays["cont"] = markers(T, N)
        return arrays

    def expected(inputs, w):
        w_x, b, w_h, w_o, b_o = w["rnn"]
        h = inputs["h0"][0] if expose else np.zeros((N, H))
        outs = []
        for t in range(T):  # rnn_layer.cpp: h_t = tanh(W_xh x_t + b_h + W_hh (cont_t h_{t-1}))
            h = np.tanh(inputs["x"][t] @ w_x.T + b + (inputs["cont"][t][:, None] * h) @ w_h.T)
            outs.append(np.tanh(h @ w_o.T + b_o))
        return {"o": np.stack(outs)} | ({"hT": h[None]} if expose else {})

    layer_check(prototxt, expected, feeds=feeds, blobs=blobs, opencv=False)


def test_lstm_unit(layer_check):
    shapes = {"c": (1, N, H), "g": (1, N, 4 * H), "cont": (1, N)}
    prototxt = net(
        'layer { name: "unit" type: "LSTMUnit" bottom: "c" bottom: "g" bottom: "cont" '
        'top: "c1" top: "h1" }',
        shapes,
    )

    def feeds(_):
        rng = np.random.default_rng(4)
        arrays = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        arrays["cont"] = np.array([[0, 1]], np.float32)
        return arrays

    def expected(inputs, w):
        i, f, o, g = np.split(inputs["g"], 4, axis=2)
        c = inputs["cont"][..., None] * _sigmoid(f) * inputs["c"] + _sigmoid(i) * np.tanh(g)
        return {"c1": c, "h1": _sigmoid(o) * np.tanh(c)}

    layer_check(prototxt, expected, feeds=feeds, blobs={}, opencv=False)


@pytest.mark.parametrize("layout", ["rows", "time_major", "clip"])
def test_caffe_lstm_fork(layer_check, layout):
    """junhyukoh/caffe-lstm: T*N rows with batch_size N (ONNX's LSTM operator), the same with a
    clip bottom (a Scan; its kernels read stream n's marker at step t from row t + n), and
    caffe_ocr's T x N x I bottom."""
    n = 2
    if layout == "time_major":
        shapes = {"x": (T, n, D)}
        param = f"num_output: {H}"
    else:
        shapes = {"x": (T * n, D)} | ({"clip": (T * n, 1)} if layout == "clip" else {})
        param = f"num_output: {H} batch_size: {n}"
    bottoms = "".join(f'bottom: "{k}" ' for k in shapes)
    prototxt = net(
        f'layer {{ name: "lstm" type: "Lstm" {bottoms}top: "h" lstm_param {{ {param} }} }}', shapes
    )
    rng = np.random.default_rng(5)
    sizes = [(4 * H, D), (4 * H, H), (4 * H,)]
    blobs = {"lstm": [rng.uniform(-0.6, 0.6, s).astype(np.float32) for s in sizes]}
    clip = np.array([0, 0, 1, 1, 0, 1, 1, 1, 1, 1], np.float32).reshape(-1, 1)

    def feeds(_):
        arrays = {"x": np.random.default_rng(6).standard_normal(shapes["x"]).astype(np.float32)}
        if layout == "clip":
            arrays["clip"] = clip
        return arrays

    def expected(inputs, w):
        w_i, w_h, b = w["lstm"]
        x = inputs["x"].reshape(T, n, D)
        if layout == "clip":
            cont = np.stack([[clip[t + j, 0] for j in range(n)] for t in range(T)])
        else:
            cont = np.ones((T, n))
            cont[0] = 0
        hs, _, _ = numpy_lstm(x, cont, w_i, b, w_h)
        return {"h": hs if layout == "time_major" else hs.reshape(T * n, H)}

    layer_check(prototxt, expected, feeds=feeds, blobs=blobs, opencv=False)


def test_continuation_indicator_feeds_an_lstm(layer_check):
    """CRNN: ContinuationIndicator's markers (0 at step 0, then 1) into BVLC's LSTM, which ONNX
    then runs as its LSTM operator."""
    shapes = {"x": (T, N, D)}
    prototxt = net(
        'layer { name: "ci" type: "ContinuationIndicator" bottom: "x" top: "cont" '
        f"continuation_indicator_param {{ time_step: {T} batch_size: {N} }} }}\n"
        f'layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
        f"recurrent_param {{ num_output: {H} }} }}",
        shapes,
    )
    blobs = {"lstm": lstm_blobs(np.random.default_rng(8))}

    def feeds(_):
        return {"x": np.random.default_rng(8).standard_normal((T, N, D)).astype(np.float32)}

    def expected(inputs, w):
        cont = np.ones((T, N))
        cont[0] = 0
        return {"cont": cont, "h": numpy_lstm(inputs["x"], cont, *w["lstm"])[0]}

    layer_check(prototxt, expected, feeds=feeds, blobs=blobs, opencv=False)


@pytest.mark.parametrize("case", ["lstm", "rnn", "lstm_unit"])
def test_torch_and_onnxruntime_match_real_caffe(case):
    """PyTorch and ONNX Runtime (float32) on the nets real BVLC Caffe ran (tests/reference/data/
    recurrent: resets inside the sequences, x_static, expose_hidden): every top within
    1e-5 x its largest magnitude (plus 1e-6) of Caffe's float32 values."""
    from pathlib import Path

    from caffe_compat.converters.onnx.export import to_onnx
    from caffe_compat.ir.load import load_net
    from caffe_compat.verify.backends import run_onnxruntime, run_torch

    data = Path(__file__).resolve().parents[1] / "reference" / "data" / "recurrent"
    with np.load(data / f"{case}.npz") as arrays:
        rec = {k: arrays[k] for k in arrays.files}
    graph = load_net(data / f"{case}.prototxt").graph
    for node in graph.nodes:
        count = sum(1 for k in rec if k.startswith(f"param/{node.name}/"))
        node.blobs = [rec[f"param/{node.name}/{i}"] for i in range(count)]
    inputs = {k.split("/", 1)[1]: v for k, v in rec.items() if k.startswith("input/")}
    tops = [v for n in graph.nodes for v in n.outputs if n.type != "Input"]
    model = to_onnx(graph, dynamic_batch=False).SerializeToString()
    for produced in (run_torch(graph, inputs, tops), run_onnxruntime(model, inputs)):
        for value in tops:
            want = rec[f"data/{graph.blob_of[value]}"]
            limit = 1e-5 * float(np.abs(want).max()) + 1e-6
            np.testing.assert_allclose(produced[value], want, rtol=0, atol=limit, err_msg=value)
