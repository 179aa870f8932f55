"""Recurrent layers in ONNX (opset 17).

The choice, per layer:

- ONNX's ``LSTM`` operator has no per-step reset, so it is used only where the markers are known
  when the model is built: caffe-lstm's ``Lstm`` without a clip bottom (its step 0 starts from
  zero state, later steps continue) and BVLC's ``LSTM`` whose cont comes from a CRNN
  ``ContinuationIndicator`` (0 at step 0, 1 after) with neither x_static nor exposed state. The
  weights are reordered from Caffe's gates i, f, o, g to ONNX's i, o, f, c.
- Everywhere else (cont is a net input, so any step may reset) the recurrence is a ``Scan`` over
  the time axis whose body is one step with cont applied as Caffe does (``cont * h`` into the
  recurrent product, ``cont * sigmoid`` as the forget gate). The input projection of all steps
  (and the static term) is one MatMul outside the loop; only the recurrent product is per step.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.recurrent import has_static_input, lstm_layout
from ._base import OnnxContext, OnnxOut


def onnx_gates(array: np.ndarray) -> np.ndarray:
    """Caffe's gate blocks i, f, o, g (axis 0) in ONNX LSTM's order i, o, f, c."""
    i, f, o, g = np.split(np.asarray(array), 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


class _Builder:
    """Nodes and initializers of one layer, with names unique to it."""

    def __init__(self, ctx: OnnxContext) -> None:
        self.ctx = ctx
        self.nodes: list = []
        self.inits: list = []

    def const(self, suffix: str, array, dtype=np.float32) -> str:
        tensor = self.ctx.tensor(suffix, array, dtype)
        self.inits.append(tensor)
        return tensor.name

    def op(self, op_type: str, inputs: list[str], suffix: str, out: str | None = None, **attrs):
        name = out or self.ctx.name(suffix)
        self.nodes.append(self.ctx.op(op_type, inputs, [name], suffix, **attrs))
        return name

    def result(self) -> OnnxOut:
        return OnnxOut(self.nodes, self.inits)


def _projection(b: _Builder, x: str, w: np.ndarray, bias: np.ndarray, static=None) -> str:
    """Every step's input term at once: x (T x N x ...) as T x N x D, times W^T, plus b, plus the
    static term ``x_static W_static^T`` broadcast over the steps."""
    rows = b.op("Reshape", [x, b.const("rows_shape", [0, 0, -1], np.int64)], "x_rows")
    pre = b.op("MatMul", [rows, b.const("w_x_t", np.asarray(w).T)], "x_proj")
    pre = b.op("Add", [pre, b.const("b", bias)], "pre")
    if static is not None:
        xs, w_static = static
        flat = b.op("Flatten", [xs], "static_rows", axis=1)
        term = b.op("MatMul", [flat, b.const("w_static_t", np.asarray(w_static).T)], "static")
        pre = b.op("Add", [pre, term], "pre_static")
    return pre


def _zero_state(b: _Builder, like: str, hidden: int, suffix: str) -> str:
    """N x H zeros, N read from axis 1 of ``like`` (the batch axis stays dynamic)."""
    n = b.op("Shape", [like], f"{suffix}_n", start=1, end=2)
    shape = b.op(
        "Concat", [n, b.const(f"{suffix}_h", [hidden], np.int64)], f"{suffix}_shape", axis=0
    )
    return b.op("ConstantOfShape", [shape], suffix)


def _step_graph(b: _Builder, kind: str, w_h: np.ndarray) -> tuple:
    """Scan's body: one step of the LSTM (states h, c) or RNN (state h), reading its pre-activation
    row and its cont column; the recurrent weight is an initializer of the outer graph."""
    ctx = b.ctx
    hidden = w_h.shape[1]
    width = w_h.shape[0]
    w_name = b.const("w_h_t", np.asarray(w_h).T)

    def v(s: str) -> str:
        return ctx.name(f"step/{s}")

    def info(s: str, cols: int):
        return helper.make_tensor_value_info(v(s), TensorProto.FLOAT, [None, cols])

    states = ["h_in", "c_in"] if kind == "LSTM" else ["h_in"]
    inputs = [info(s, hidden) for s in states] + [info("pre_t", width), info("cont_t", 1)]
    nodes = [
        helper.make_node("Mul", [v("h_in"), v("cont_t")], [v("h_kept")]),
        helper.make_node("MatMul", [v("h_kept"), w_name], [v("rec")]),
        helper.make_node("Add", [v("pre_t"), v("rec")], [v("z")]),
    ]
    if kind == "LSTM":
        split = b.const("split", [hidden] * 4, np.int64)
        nodes += [
            helper.make_node(
                "Split", [v("z"), split], [v("zi"), v("zf"), v("zo"), v("zg")], axis=1
            ),
            helper.make_node("Sigmoid", [v("zi")], [v("i")]),
            helper.make_node("Sigmoid", [v("zf")], [v("f_raw")]),
            helper.make_node("Mul", [v("f_raw"), v("cont_t")], [v("f")]),  # 0 where cont is 0
            helper.make_node("Sigmoid", [v("zo")], [v("o")]),
            helper.make_node("Tanh", [v("zg")], [v("g")]),
            helper.make_node("Mul", [v("f"), v("c_in")], [v("fc")]),
            helper.make_node("Mul", [v("i"), v("g")], [v("ig")]),
            helper.make_node("Add", [v("fc"), v("ig")], [v("c_out")]),
            helper.make_node("Tanh", [v("c_out")], [v("tanh_c")]),
            helper.make_node("Mul", [v("o"), v("tanh_c")], [v("h_out")]),
        ]
        outs = ["h_out", "c_out"]
    else:
        nodes.append(helper.make_node("Tanh", [v("z")], [v("h_out")]))
        outs = ["h_out"]
    nodes.append(helper.make_node("Identity", [v("h_out")], [v("h_seq")]))
    outputs = [info(s, hidden) for s in [*outs, "h_seq"]]
    body = helper.make_graph(nodes, ctx.name("step"), inputs, outputs)
    return body, len(states)


def _scan(b: _Builder, kind: str, pre: str, cont3: str, w_h: np.ndarray, states: list[str]):
    """Scan over axis 0: returns (final states, every h as T x N x H)."""
    body, count = _step_graph(b, kind, w_h)
    finals = [b.ctx.name(f"final_{j}") for j in range(count)]
    seq = b.ctx.name("h_all")
    b.nodes.append(
        b.ctx.op(
            "Scan", [*states, pre, cont3], [*finals, seq], "scan", body=body, num_scan_inputs=2
        )
    )
    return finals, seq


def _continuation_source(ctx: OnnxContext) -> bool:
    """Whether cont is a ContinuationIndicator's top (0 at step 0, 1 after: known when built)."""
    cont = ctx.node.inputs[1]
    return any(n.type == "ContinuationIndicator" and cont in n.outputs for n in ctx.graph.nodes)


def _lstm_operator(b: _Builder, x3: str, w_x, w_h, bias, hidden: int, out: str) -> None:
    """ONNX's LSTM over a T x N x I input from zero state; ``out`` gets Y as T x N x H."""
    w = b.const("onnx_w", onnx_gates(w_x)[None])
    r = b.const("onnx_r", onnx_gates(w_h)[None])
    bb = b.const("onnx_b", np.concatenate([onnx_gates(bias), np.zeros(4 * hidden)])[None])
    y = b.op("LSTM", [x3, w, r, bb], "lstm", hidden_size=hidden)
    b.op("Squeeze", [y, b.const("direction_axis", [1], np.int64)], "y", out=out)


@register(("LSTM", "RNN"), "onnx")
def _recurrent(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    b = _Builder(ctx)
    p = node.param.recurrent_param
    hidden = int(p.num_output)
    static = has_static_input(node, len(node.inputs))
    blobs = node.blobs
    w_h = blobs[2 + static]
    x, cont = ctx.inputs[0], ctx.inputs[1]
    if node.type == "LSTM" and not static and not p.expose_hidden and _continuation_source(ctx):
        x3 = b.op("Reshape", [x, b.const("rows_shape", [0, 0, -1], np.int64)], "x_rows")
        _lstm_operator(b, x3, blobs[0], w_h, blobs[1], hidden, ctx.outputs[0])
        return b.result()
    pre = _projection(b, x, blobs[0], blobs[1], (ctx.inputs[2], blobs[2]) if static else None)
    cont3 = b.op("Unsqueeze", [cont, b.const("cont_axis", [2], np.int64)], "cont3")
    exposed = ctx.inputs[2 + static :]
    flat = b.const("state_shape", [-1, hidden], np.int64) if exposed else ""
    states = [b.op("Reshape", [s, flat], f"state0_{j}") for j, s in enumerate(exposed)]
    if not states:
        zero = _zero_state(b, cont, hidden, "zero_state")
        states = [zero, zero] if node.type == "LSTM" else [zero]
    finals, seq = _scan(b, node.type, pre, cont3, w_h, states)
    if node.type == "LSTM":
        b.op("Identity", [seq], "h", out=ctx.outputs[0])
    else:
        w_o, b_o = blobs[-2], blobs[-1]
        o = b.op("MatMul", [seq, b.const("w_o_t", np.asarray(w_o).T)], "o_proj")
        o = b.op("Add", [o, b.const("b_o", b_o)], "o_pre")
        b.op("Tanh", [o], "o", out=ctx.outputs[0])
    if len(ctx.outputs) > 1:  # expose_hidden: the final state as 1 x N x H tops
        axis0 = b.const("step_axis", [0], np.int64)
        for j, top in enumerate(ctx.outputs[1:]):
            b.op("Unsqueeze", [finals[j], axis0], f"final_top_{j}", out=top)
    return b.result()


@register("LSTMUnit", "onnx")
def _lstm_unit(node: Node, ctx: OnnxContext) -> OnnxOut:
    b = _Builder(ctx)
    c_prev, gates, cont = ctx.inputs
    hidden = ctx.in_shapes[0][2]
    k = b.op("Unsqueeze", [cont, b.const("cont_axis", [2], np.int64)], "cont3")
    parts = [ctx.name(s) for s in ("zi", "zf", "zo", "zg")]
    split = b.const("split", [hidden] * 4, np.int64)
    b.nodes.append(ctx.op("Split", [gates, split], parts, "split", axis=2))
    i = b.op("Sigmoid", [parts[0]], "i")
    f = b.op("Mul", [b.op("Sigmoid", [parts[1]], "f_raw"), k], "f")  # 0 where cont is 0
    o = b.op("Sigmoid", [parts[2]], "o")
    g = b.op("Tanh", [parts[3]], "g")
    c = b.op(
        "Add", [b.op("Mul", [f, c_prev], "fc"), b.op("Mul", [i, g], "ig")], "c", out=ctx.outputs[0]
    )
    b.op("Mul", [o, b.op("Tanh", [c], "tanh_c")], "h", out=ctx.outputs[1])
    return b.result()


@register("Lstm", "onnx")
def _lstm_fork(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    b = _Builder(ctx)
    w_i, w_h, bias = node.blobs
    hidden = int(w_h.shape[1])
    _, n, i_dim, time_major = lstm_layout(node, ctx.in_shapes[0])
    x3 = b.op("Reshape", [ctx.inputs[0], b.const("steps_shape", [-1, n, i_dim], np.int64)], "x3")
    out = ctx.outputs[0]
    seq = out if time_major else ctx.name("h_steps")
    if len(ctx.inputs) == 1:  # markers known: 0 at step 0, 1 after
        _lstm_operator(b, x3, w_i, w_h, bias, hidden, seq)
    else:
        pre = b.op("MatMul", [x3, b.const("w_x_t", np.asarray(w_i).T)], "x_proj")
        pre = b.op("Add", [pre, b.const("b", bias)], "pre")
        # the fork's kernels read stream n's marker at step t from row t + n of the clip bottom
        steps = b.op("Shape", [x3], "steps", start=0, end=1)
        t_len = b.op("Squeeze", [steps, b.const("zero_axis", [0], np.int64)], "t_len")
        zero, one = b.const("zero", 0, np.int64), b.const("one", 1, np.int64)
        t_range = b.op("Range", [zero, t_len, one], "t_range")
        t_col = b.op("Unsqueeze", [t_range, b.const("col_axis", [1], np.int64)], "t_col")
        index = b.op("Add", [t_col, b.const("streams", np.arange(n), np.int64)], "clip_index")
        flat = b.op("Reshape", [ctx.inputs[1], b.const("flat", [-1], np.int64)], "clip_flat")
        cont = b.op("Gather", [flat, index], "cont", axis=0)
        cont3 = b.op("Unsqueeze", [cont, b.const("cont_axis", [2], np.int64)], "cont3")
        state = _zero_state(b, cont, hidden, "zero_state")
        _, h_all = _scan(b, "LSTM", pre, cont3, w_h, [state, state])
        b.op("Identity", [h_all], "h", out=seq)
    if not time_major:
        b.op("Reshape", [seq, b.const("rows_out", [-1, hidden], np.int64)], "rows", out=out)
    return b.result()


@register("ContinuationIndicator", "onnx")
def _continuation(node: Node, ctx: OnnxContext) -> OnnxOut:
    b = _Builder(ctx)
    (shape,) = ctx.out_shapes
    top = np.ones(shape, np.float32)
    top[0] = 0
    b.op("Identity", [b.const("markers", top)], "markers_out", out=ctx.outputs[0])
    return b.result()
