"""Recurrent layers in float64, transcribed from the C++ that defines them.

BVLC ``LSTM`` and ``RNN`` (lstm_layer.cpp, rnn_layer.cpp, recurrent_layer.cpp) unroll into a net
of InnerProduct, Scale, Eltwise, LSTMUnit or TanH layers; this computes the same values without
building it. The input projection ``W x_t + b`` (and the static term) is one matrix product over
all T steps; the recurrence itself is sequential by definition (step t needs h_{t-1}), so it is
one loop over time with each step batched over the N streams and the H units.

Per step t (cont_t is the T x N marker, h and c the state carried in):

- LSTM: ``gates = W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t * h)``, split i, f, o,
  g; ``i, o = sigmoid``, ``f = cont_t * sigmoid`` (0 where cont_t is 0), ``g = tanh``;
  ``c = f * c + i * g``, ``h = o * tanh(c)``; the top is every h.
- RNN: ``h = tanh(W_xh x_t + b_h [+ static] + W_hh (cont_t * h))``; the top is
  ``o_t = tanh(W_ho h_t + b_o)``.

The state carried in is zero, or the ``h_0``/``c_0`` bottoms with ``expose_hidden`` (Caffe carries
the last forward's state into the next forward without expose_hidden; a converted net starts
from zero, which only differs before the first ``cont = 0``). Backward is Caffe's: the exposed
state bottoms and tops share data but not diffs with the unrolled net, so no diff reaches h_0
or c_0 (they stay 0) and the diffs of the h_T/c_T tops are ignored; cont gets none.

caffe-lstm's ``Lstm`` (junhyukoh/caffe-lstm lstm_layer.cu) follows the GPU kernels, which the
published models were trained with: the optional clip bottom scales the recurrent term and the
forget gate like cont, and without it step 0 starts from zero state. Both kernels read the clip
value of stream n at step t from row ``t + n`` (``clip + offset(t)`` on a T*N x 1 blob); that is
kept. Its CPU path differs for N > 1 (it adds stream 0's recurrent term to every stream).
"""

from __future__ import annotations

import numpy as np

from ..ir.graph import Node
from ..registry import register
from ..shapes.recurrent import has_static_input, hidden_count, lstm_layout
from ._base import Arrays, BackwardContext, Grads, LayerContext, no_grads


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class _Unrolled:
    """A BVLC recurrent layer's bottoms, blobs and the pre-computed input projection."""

    def __init__(self, node: Node, inputs: Arrays, blobs: tuple[np.ndarray, ...]) -> None:
        x, cont = inputs[0], inputs[1]
        self.t, self.n = x.shape[0], x.shape[1]
        self.x = x.reshape(self.t, self.n, -1)
        self.cont = cont
        self.static = has_static_input(node, len(inputs))
        self.w_x, self.b = blobs[0], blobs[1]
        self.w_static = blobs[2] if self.static else None
        self.w_h = blobs[2 + self.static]
        self.xs = inputs[2].reshape(self.n, -1) if self.static else None
        self.h = self.w_h.shape[1]
        exposed = inputs[2 + self.static :]
        zero = np.zeros((self.n, self.h))
        self.state0 = [s.reshape(self.n, self.h) for s in exposed] or [zero] * hidden_count(node)
        # every step's input term at once: T*N rows through one GEMM
        self.pre = self.x @ self.w_x.T + self.b
        if self.static:
            self.pre = self.pre + self.xs @ self.w_static.T

    def param_grads(self, d_pre: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Diffs of W_x, b and W_static from the diff of every step's pre-activation."""
        rows = d_pre.reshape(self.t * self.n, -1)
        w_x = rows.T @ self.x.reshape(self.t * self.n, -1)
        w_static = d_pre.sum(axis=0).T @ self.xs if self.static else None
        return w_x, rows.sum(axis=0), w_static


def lstm_steps(
    pre: np.ndarray, cont: np.ndarray, w_h: np.ndarray, h0: np.ndarray, c0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The LSTM recurrence: (every h, every c, every gate activation) for T steps."""
    t_len, n, width = pre.shape
    h_dim = width // 4
    hs, cs, acts = np.empty((t_len, n, h_dim)), np.empty((t_len, n, h_dim)), np.empty(pre.shape)
    h, c = h0, c0
    for t in range(t_len):  # sequential by definition: step t reads h_{t-1}
        k = cont[t][:, None]
        z = pre[t] + (k * h) @ w_h.T
        i, f, o = (_sigmoid(z[:, j * h_dim : (j + 1) * h_dim]) for j in range(3))
        f = np.where(k == 0, 0.0, k * f)
        g = np.tanh(z[:, 3 * h_dim :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs[t], cs[t] = h, c
        acts[t] = np.concatenate([i, f, o, g], axis=1)
    return hs, cs, acts


@register("LSTM", "reference")
def _lstm(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    net = _Unrolled(node, inputs, ctx.blobs)
    hs, cs, _ = lstm_steps(net.pre, net.cont, net.w_h, *net.state0)
    tops = [hs]
    if node.param.recurrent_param.expose_hidden:
        tops += [hs[-1:].copy(), cs[-1:].copy()]
    return tops


@register("LSTM", "reference_backward")
def _lstm_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    net = _Unrolled(node, inputs, ctx.blobs)
    hs, cs, acts = lstm_steps(net.pre, net.cont, net.w_h, *net.state0)
    h_dim = net.h
    d_pre = np.empty(net.pre.shape)
    d_w_h = np.zeros(net.w_h.shape)
    dh_next, dc_next = np.zeros((net.n, h_dim)), np.zeros((net.n, h_dim))
    h0, c0 = net.state0
    dh_top = top_diffs[0].reshape(net.t, net.n, h_dim)  # h_T and c_T tops carry no diff back
    for t in reversed(range(net.t)):
        i, f, o, g = (acts[t][:, j * h_dim : (j + 1) * h_dim] for j in range(4))
        c_prev = cs[t - 1] if t else c0
        h_prev = hs[t - 1] if t else h0
        tanh_c = np.tanh(cs[t])
        dh = dh_top[t] + dh_next
        c_term = dc_next + dh * o * (1 - tanh_c * tanh_c)  # lstm_unit_layer.cpp's Backward
        d_pre[t] = np.concatenate(
            [
                c_term * g * i * (1 - i),
                c_term * c_prev * f * (1 - f),
                dh * tanh_c * o * (1 - o),
                c_term * i * (1 - g * g),
            ],
            axis=1,
        )
        dc_next = c_term * f
        k = net.cont[t][:, None]
        d_w_h += d_pre[t].T @ (k * h_prev)
        dh_next = k * (d_pre[t] @ net.w_h)  # the Scale layer h_conted = cont * h
    return _bottoms_and_params(node, net, d_pre, d_w_h, inputs, [])


def _bottoms_and_params(
    node: Node, net: _Unrolled, d_pre: np.ndarray, d_w_h: np.ndarray, inputs: Arrays, tail: list
) -> Grads:
    w_x, b, w_static = net.param_grads(d_pre)
    dx = (d_pre.reshape(net.t * net.n, -1) @ net.w_x).reshape(inputs[0].shape)
    bottoms: list[np.ndarray | None] = [dx, None]
    if net.static:
        bottoms.append((d_pre.sum(axis=0) @ net.w_static).reshape(inputs[2].shape))
    bottoms += [np.zeros(a.shape) for a in inputs[2 + net.static :]]  # ShareData only
    params = [w_x, b] + ([w_static] if net.static else []) + [d_w_h] + tail
    return bottoms, params


def rnn_steps(pre: np.ndarray, cont: np.ndarray, w_h: np.ndarray, h0: np.ndarray) -> np.ndarray:
    """The RNN recurrence: every h for T steps."""
    hs = np.empty(pre.shape)
    h = h0
    for t in range(pre.shape[0]):  # sequential by definition: step t reads h_{t-1}
        h = np.tanh(pre[t] + (cont[t][:, None] * h) @ w_h.T)
        hs[t] = h
    return hs


@register("RNN", "reference")
def _rnn(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    net = _Unrolled(node, inputs, ctx.blobs)
    hs = rnn_steps(net.pre, net.cont, net.w_h, net.state0[0])
    w_o, b_o = ctx.blobs[-2], ctx.blobs[-1]
    tops = [np.tanh(hs @ w_o.T + b_o)]  # W_ho for every step at once
    if node.param.recurrent_param.expose_hidden:
        tops.append(hs[-1:].copy())
    return tops


@register("RNN", "reference_backward")
def _rnn_backward(node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext) -> Grads:
    net = _Unrolled(node, inputs, ctx.blobs)
    h0 = net.state0[0]
    hs = rnn_steps(net.pre, net.cont, net.w_h, h0)
    w_o, b_o = ctx.blobs[-2], ctx.blobs[-1]
    out = np.tanh(hs @ w_o.T + b_o)
    d_out = top_diffs[0].reshape(out.shape) * (1 - out * out)
    rows = d_out.reshape(net.t * net.n, -1)
    d_w_o = rows.T @ hs.reshape(net.t * net.n, -1)
    d_hs = d_out @ w_o
    d_pre = np.empty(net.pre.shape)
    d_w_h = np.zeros(net.w_h.shape)
    dh_next = np.zeros((net.n, net.h))
    for t in reversed(range(net.t)):
        d_pre[t] = (d_hs[t] + dh_next) * (1 - hs[t] * hs[t])
        k = net.cont[t][:, None]
        d_w_h += d_pre[t].T @ (k * (hs[t - 1] if t else h0))
        dh_next = k * (d_pre[t] @ net.w_h)
    return _bottoms_and_params(node, net, d_pre, d_w_h, inputs, [d_w_o, rows.sum(axis=0)])


@register("LSTMUnit", "reference")
def _lstm_unit(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    c_prev, gates, cont = inputs
    h_dim = c_prev.shape[2]
    k = cont[..., None]
    i, f, o = (_sigmoid(gates[..., j * h_dim : (j + 1) * h_dim]) for j in range(3))
    f = np.where(k == 0, 0.0, k * f)
    g = np.tanh(gates[..., 3 * h_dim :])
    c = f * c_prev + i * g
    return [c, o * np.tanh(c)]


@register("LSTMUnit", "reference_backward")
def _lstm_unit_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    c_prev, gates, cont = inputs
    dc, dh = top_diffs
    h_dim = c_prev.shape[2]
    k = cont[..., None]
    i, f, o = (_sigmoid(gates[..., j * h_dim : (j + 1) * h_dim]) for j in range(3))
    f = np.where(k == 0, 0.0, k * f)
    g = np.tanh(gates[..., 3 * h_dim :])
    tanh_c = np.tanh(ctx.outputs[0])
    c_term = dc + dh * o * (1 - tanh_c * tanh_c)
    d_gates = np.concatenate(
        [
            c_term * g * i * (1 - i),
            c_term * c_prev * f * (1 - f),
            dh * tanh_c * o * (1 - o),
            c_term * i * (1 - g * g),
        ],
        axis=-1,
    )
    return [c_term * f, d_gates, None], []


def fork_clip(clip: np.ndarray | None, t_len: int, n: int) -> np.ndarray:
    """caffe-lstm's markers as T x N: ``clip[t + n]`` (its kernels' indexing), or 0 at step 0
    and 1 after without a clip bottom."""
    if clip is None:
        cont = np.ones((t_len, n))
        cont[0] = 0.0
        return cont
    flat = clip.reshape(-1)
    return flat[np.arange(t_len)[:, None] + np.arange(n)[None, :]]


@register("Lstm", "reference")
def _lstm_fork(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    x = inputs[0]
    t_len, n, i_dim, time_major = lstm_layout(node, x.shape)
    w_i, w_h, b = ctx.blobs
    h_dim = w_h.shape[1]
    pre = x.reshape(t_len, n, i_dim) @ w_i.T + b
    cont = fork_clip(inputs[1] if len(inputs) > 1 else None, t_len, n)
    zero = np.zeros((n, h_dim))
    hs, _, _ = lstm_steps(pre, cont, w_h, zero, zero)
    return [hs if time_major else hs.reshape(t_len * n, h_dim)]


@register("Lstm", "reference_backward")
def _lstm_fork_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    """The fork's Backward_gpu: BPTT through the steps, each step's pre-gate diffs clamped to
    +-clipping_threshold (when positive) before they reach W, x and h_{t-1}. W_h's diff sums
    pre-gate diff x h_{t-1} over the steps without the clip factor (as the fork's GEMM does)."""
    x = inputs[0]
    t_len, n, i_dim, _ = lstm_layout(node, x.shape)
    w_i, w_h, b = ctx.blobs
    h_dim = w_h.shape[1]
    rows = x.reshape(t_len, n, i_dim)
    pre = rows @ w_i.T + b
    cont = fork_clip(inputs[1] if len(inputs) > 1 else None, t_len, n)
    zero = np.zeros((n, h_dim))
    hs, cs, acts = lstm_steps(pre, cont, w_h, zero, zero)
    bound = float(node.param.lstm_param.clipping_threshold)
    dh_top = top_diffs[0].reshape(t_len, n, h_dim)
    d_pre = np.empty(pre.shape)
    dh_next, dc_next = np.zeros((n, h_dim)), np.zeros((n, h_dim))
    for t in reversed(range(t_len)):
        k = cont[t][:, None]
        i, f, o, g = (acts[t][:, j * h_dim : (j + 1) * h_dim] for j in range(4))
        sig_f = np.divide(f, k, out=np.zeros_like(f), where=k != 0)  # the unscaled gate
        c_prev = cs[t - 1] if t else zero
        tanh_c = np.tanh(cs[t])
        dh = dh_top[t] + dh_next
        dc = dc_next + dh * o * (1 - tanh_c * tanh_c)
        step = np.concatenate(
            [
                dc * g * i * (1 - i),
                k * dc * c_prev * sig_f * (1 - sig_f),
                dh * tanh_c * o * (1 - o),
                dc * i * (1 - g * g),
            ],
            axis=1,
        )
        if bound > 0:
            step = np.clip(step, -bound, bound)
        d_pre[t] = step
        dc_next = k * dc * sig_f
        dh_next = k * (step @ w_h)
    flat = d_pre.reshape(t_len * n, -1)
    d_w_h = d_pre[1:].reshape(-1, 4 * h_dim).T @ hs[:-1].reshape(-1, h_dim)
    dx = (flat @ w_i).reshape(x.shape)
    bottoms: list[np.ndarray | None] = [dx] + [None] * (len(inputs) - 1)
    return bottoms, [flat.T @ rows.reshape(t_len * n, -1), d_w_h, flat.sum(axis=0)]


@register("ContinuationIndicator", "reference")
def _continuation(node: Node, inputs: Arrays, ctx: LayerContext) -> Arrays:
    (shape,) = ctx.out_shapes
    top = np.ones(shape)
    top[0] = 0.0
    return [top]


@register("ContinuationIndicator", "reference_backward")
def _continuation_backward(
    node: Node, inputs: Arrays, top_diffs: Arrays, ctx: BackwardContext
) -> Grads:
    """The fork's Backward is empty: its top depends on no bottom and it has no blobs."""
    return no_grads(inputs, ctx)
