"""Recurrent layers in PyTorch: BVLC ``LSTM``, ``RNN`` and ``LSTMUnit``, caffe-lstm's ``Lstm`` and
CRNN's ``ContinuationIndicator``, with Caffe's blob layout (W_x, b, [W_static], W_h, gates i, f, o,
g) so real caffemodels load unchanged.

The input projection of all T steps is one ``linear`` over T*N rows; the recurrence is a loop over
time (step t needs h_{t-1}), each step batched over the streams and units. Where the markers are
known when the net is built (caffe-lstm without a clip bottom, or cont from a CRNN
ContinuationIndicator) PyTorch's fused LSTM runs all steps in one call instead. The gradients follow
Caffe's: no diff reaches the exposed initial state (h_0, c_0) nor comes back from the exposed final
state tops, as in recurrent_layer.cpp, and caffe-lstm's ``clipping_threshold`` clamps the
pre-gate diffs of every step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.recurrent import has_static_input, lstm_layout
from ._base import TorchContext, parameter


def _fork_recurrent_term(h: torch.Tensor, k: torch.Tensor, w_h: torch.Tensor) -> torch.Tensor:
    """``k * (W_h h)`` whose W_h diff is caffe-lstm's: the pre-gate diff times h_{t-1} without the
    clip factor k (its GEMM over all steps), while h gets k times the product as usual."""
    value = k * F.linear(h, w_h.detach())
    free = F.linear(h.detach(), w_h)
    return value + (free - free.detach())


def lstm_steps(
    pre: torch.Tensor,
    cont: torch.Tensor,
    w_h: torch.Tensor,
    h: torch.Tensor,
    c: torch.Tensor,
    clip_diff: float = 0.0,
    fork: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every h (T x N x H) and the last c of the LSTM recurrence over T x N x 4H pre-activations
    (``fork``: caffe-lstm's W_h diff, see ``_fork_recurrent_term``)."""
    width = w_h.shape[1]
    hs = []
    for pre_t, cont_t in zip(pre.unbind(0), cont.unbind(0)):  # sequential: step t needs h_{t-1}
        k = cont_t.unsqueeze(1)
        z = pre_t + (_fork_recurrent_term(h, k, w_h) if fork else F.linear(k * h, w_h))
        if clip_diff > 0 and z.requires_grad:
            z.register_hook(lambda g, b=clip_diff: g.clamp(-b, b))
        i, f, o, g = torch.split(z, width, dim=1)
        f = torch.where(k == 0, torch.zeros_like(f), k * torch.sigmoid(f))
        c = f * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs), c


_TORCH_GATES = (0, 1, 3, 2)  # Caffe's blocks i, f, o, g in PyTorch's order i, f, g, o


def fused_lstm(
    x: torch.Tensor, w_x: torch.Tensor, w_h: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """PyTorch's fused LSTM (one call over all steps, cuDNN on CUDA) on Caffe's blobs, from zero
    state: the markers known when the net is built (0 at step 0, then 1). The gate reorder is an
    index of the caller's tensors, so diffs reach Caffe's layout."""
    h = w_h.shape[1]
    order = torch.cat([torch.arange(j * h, (j + 1) * h) for j in _TORCH_GATES]).to(x.device)
    zero = x.new_zeros((1, x.shape[1], h))
    weights = [w_x[order], w_h[order], b[order], torch.zeros_like(b)]
    out, _, _ = torch.lstm(x, (zero, zero), weights, True, 1, 0.0, False, False, False)
    return out


class Recurrent(nn.Module):
    """BVLC's LSTM or RNN layer: bottoms x, cont, [x_static], [h_0, (c_0)]."""

    def __init__(self, node: Node, n_bottoms: int, known_markers: bool = False) -> None:
        super().__init__()
        self.kind = node.type
        self.static = has_static_input(node, n_bottoms)
        self.expose = bool(node.param.recurrent_param.expose_hidden)
        self.hidden = int(node.param.recurrent_param.num_output)
        blobs = list(node.blobs)
        self.w_x, self.b = parameter(blobs[0]), parameter(blobs[1])
        slots = ["w_x", "b"]
        if self.static:
            self.w_static = parameter(blobs[2])
            slots.append("w_static")
        self.w_h = parameter(blobs[2 + self.static])
        slots.append("w_h")
        if self.kind == "RNN":
            self.w_o, self.b_o = parameter(blobs[-2]), parameter(blobs[-1])
            slots += ["w_o", "b_o"]
        self.blob_slots = tuple(slots)
        simple = self.kind == "LSTM" and not self.static and not self.expose
        self.fused = simple and known_markers

    def forward(self, x: torch.Tensor, cont: torch.Tensor, *rest: torch.Tensor):
        t_len, n = x.shape[0], x.shape[1]
        if self.fused:  # cont is 0 at step 0, then 1 (a ContinuationIndicator's)
            return fused_lstm(x.reshape(t_len, n, -1), self.w_x, self.w_h, self.b)
        pre = F.linear(x.reshape(t_len, n, -1), self.w_x, self.b)  # all T steps at once
        if self.static:
            pre = pre + F.linear(rest[0].reshape(n, -1), self.w_static)
        # recurrent_layer.cpp shares only the data of exposed states: no diff flows through them
        given = [s.detach().reshape(n, self.hidden) for s in rest[self.static :]]
        cont = cont.detach().to(pre.dtype)  # sequence markers get no diff in Caffe
        if self.kind == "LSTM":
            h0, c0 = given or [pre.new_zeros((n, self.hidden))] * 2
            hs, c_last = lstm_steps(pre, cont, self.w_h, h0, c0)
            if not self.expose:
                return hs
            return hs, hs[-1:].detach(), c_last.unsqueeze(0).detach()
        h = given[0] if given else pre.new_zeros((n, self.hidden))
        hs = []
        for pre_t, cont_t in zip(pre.unbind(0), cont.unbind(0)):  # sequential by definition
            h = torch.tanh(pre_t + F.linear(cont_t.unsqueeze(1) * h, self.w_h))
            hs.append(h)
        stacked = torch.stack(hs)
        out = torch.tanh(F.linear(stacked, self.w_o, self.b_o))  # W_ho for all steps at once
        return (out, stacked[-1:].detach()) if self.expose else out


@register(("LSTM", "RNN"), "torch")
def _recurrent(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    cont = node.inputs[1]
    known = any(n.type == "ContinuationIndicator" and cont in n.outputs for n in ctx.graph.nodes)
    return Recurrent(node, len(node.inputs), known_markers=known)


class LSTMUnit(nn.Module):
    """One LSTM step (lstm_unit_layer.cpp): (c_prev, gates, cont) -> (c, h)."""

    def forward(self, c_prev: torch.Tensor, gates: torch.Tensor, cont: torch.Tensor):
        i, f, o, g = torch.chunk(gates, 4, dim=2)
        k = cont.detach().to(gates.dtype).unsqueeze(2)
        f = torch.where(k == 0, torch.zeros_like(f), k * torch.sigmoid(f))
        c = f * c_prev + torch.sigmoid(i) * torch.tanh(g)
        # a copy for the top: its diff is what the consumers send, h's path stays inside
        return c.clone(), torch.sigmoid(o) * torch.tanh(c)


@register("LSTMUnit", "torch")
def _lstm_unit(node: Node, ctx: TorchContext) -> nn.Module:
    return LSTMUnit()


def fork_clip(clip: torch.Tensor | None, t_len: int, n: int, like: torch.Tensor) -> torch.Tensor:
    """caffe-lstm's markers as T x N: row ``t + n`` of the clip bottom (its kernels' indexing),
    or 0 at step 0 and 1 after without one."""
    steps = torch.arange(t_len, device=like.device)
    if clip is None:
        return (steps > 0).to(like.dtype).unsqueeze(1).expand(t_len, n)
    index = steps.unsqueeze(1) + torch.arange(n, device=like.device).unsqueeze(0)
    return clip.reshape(-1).to(like.dtype)[index]


class ForkLstm(nn.Module):
    """junhyukoh/caffe-lstm's (and caffe_ocr's) ``Lstm``: blobs W_i (4H x I), W_h (4H x H), b."""

    def __init__(self, node: Node, layout: tuple[int, int, int, bool]) -> None:
        super().__init__()
        self.w_i, self.w_h, self.b = (parameter(b) for b in node.blobs)
        self.blob_slots = ("w_i", "w_h", "b")
        self.n, self.time_major = layout[1], layout[3]
        self.clip_diff = float(node.param.lstm_param.clipping_threshold)

    def forward(self, x: torch.Tensor, clip: torch.Tensor | None = None) -> torch.Tensor:
        n = x.shape[1] if self.time_major else self.n
        rows = x.reshape(-1, n, self.w_i.shape[1])
        h_dim = self.w_h.shape[1]
        if clip is None and not (self.clip_diff > 0 and torch.is_grad_enabled()):
            hs = fused_lstm(rows, self.w_i, self.w_h, self.b)  # markers known: 0, then 1
            return hs if self.time_major else hs.reshape(-1, h_dim)
        pre = F.linear(rows, self.w_i, self.b)
        t_len = pre.shape[0]
        cont = fork_clip(None if clip is None else clip.detach(), t_len, n, pre)
        zero = pre.new_zeros((n, h_dim))
        hs, _ = lstm_steps(pre, cont, self.w_h, zero, zero, self.clip_diff, fork=True)
        return hs if self.time_major else hs.reshape(t_len * n, h_dim)


@register("Lstm", "torch")
def _lstm_fork(node: Node, ctx: TorchContext) -> nn.Module:
    require_weights(node)
    return ForkLstm(node, lstm_layout(node, ctx.in_shapes[0]))


class ContinuationIndicator(nn.Module):
    """T x N markers: 0 at t = 0, 1 after (CRNN's ContinuationIndicator); bottoms are ignored."""

    def __init__(self, t_len: int, n: int) -> None:
        super().__init__()
        top = torch.ones(t_len, n)
        top[0] = 0
        self.register_buffer("top", top, persistent=False)

    def forward(self, *bottoms: torch.Tensor) -> torch.Tensor:
        return self.top


@register("ContinuationIndicator", "torch")
def _continuation(node: Node, ctx: TorchContext) -> nn.Module:
    (shape,) = ctx.out_shapes
    return ContinuationIndicator(shape[0], shape[1])
