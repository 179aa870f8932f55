"""Shape rules and facts for recurrent layers: BVLC's ``LSTM``, ``RNN`` and ``LSTMUnit``,
junhyukoh/caffe-lstm's ``Lstm`` and CRNN's ``ContinuationIndicator``.

BVLC's recurrent layers (recurrent_layer.cpp) read a T x N x ... bottom ``x`` (time first, then
N independent streams), a T x N bottom ``cont`` of sequence markers (0 starts a new sequence:
the state carried in is dropped), an optional N x ... ``x_static`` added at every step, and with
``expose_hidden`` the initial state as extra bottoms (``h_0`` and, for LSTM, ``c_0``, each
1 x N x num_output); the final state comes out as extra tops. Their blobs are those of the
unrolled net's InnerProducts in the order the net creates them: LSTM ``W_xc`` (4H x D),
``b_c`` (4H), ``W_xc_static`` (4H x Ds, with x_static), ``W_hc`` (4H x H), gates in the order
i, f, o, g; RNN ``W_xh``, ``b_h``, ``W_xh_static``, ``W_hh``, ``W_ho``, ``b_o``.

Axis 0 of these nets is time, not the batch: the facts say their outputs mix the items of axis 0,
so a batch is never split image by image through them.
"""

from __future__ import annotations

import math

import numpy as np

from ..ir.graph import Node, Shape
from ..proto import caffe_pb2
from ..registry import LayerShapes, describe, register

GATES = {"LSTM": 4, "RNN": 1}


def hidden_count(node: Node) -> int:
    """The hidden state blobs a BVLC recurrent layer carries: h and c (LSTM) or h (RNN)."""
    return 2 if node.type == "LSTM" else 1


def has_static_input(node: Node, bottoms: int) -> bool:
    """Caffe's rule: a third bottom beyond x, cont and the exposed hidden states is x_static."""
    exposed = hidden_count(node) if node.param.recurrent_param.expose_hidden else 0
    return bottoms > 2 + exposed


def _recurrent(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.recurrent_param
    if p.num_output <= 0:
        raise ValueError("recurrent_param.num_output must be positive")
    h = int(p.num_output)
    hidden = hidden_count(node)
    exposed = hidden if p.expose_hidden else 0
    if not 2 <= len(inputs) <= 3 + exposed or len(inputs) < 2 + exposed:
        want = f"x, cont, optional x_static{', and the initial state' if exposed else ''}"
        raise ValueError(
            f"takes {want} ({2 + exposed} or {3 + exposed} bottoms), not {len(inputs)}"
        )
    x, cont = inputs[0], inputs[1]
    if len(x) < 2:
        raise ValueError(f"bottom[0] must have at least 2 axes (T, N, ...), not {x}")
    if len(cont) != 2 or tuple(cont) != tuple(x[:2]):
        raise ValueError(f"bottom[1] (cont) must be T x N = {tuple(x[:2])}, not {cont}")
    t, n = x[0], x[1]
    static = has_static_input(node, len(inputs))
    width = GATES[node.type] * h
    params: list[Shape] = [(width, math.prod(x[2:])), (width,)]
    if static:
        xs = inputs[2]
        if len(xs) < 1 or xs[0] != n:
            raise ValueError(f"bottom[2] (x_static) must be N x ... with N = {n}, not {xs}")
        params.append((width, math.prod(xs[1:])))
    params.append((width, h))
    if node.type == "RNN":
        params += [(h, h), (h,)]
    for shape in inputs[2 + static :]:
        if tuple(shape) != (1, n, h):
            raise ValueError(
                f"an exposed hidden state bottom must be 1 x N x H = {(1, n, h)}, not {shape}"
            )
    return LayerShapes([(t, n, h)] + [(1, n, h)] * exposed, params)


register(("LSTM", "RNN"), "shape")(_recurrent)


@register("LSTMUnit", "shape")
def _lstm_unit(node: Node, inputs: list[Shape]) -> LayerShapes:
    c_prev, gates, cont = inputs
    if len(c_prev) != 3 or c_prev[0] != 1:
        raise ValueError(f"bottom[0] (c_prev) must be 1 x N x H, not {c_prev}")
    n, h = c_prev[1], c_prev[2]
    if tuple(gates) != (1, n, 4 * h):
        raise ValueError(
            f"bottom[1] (gate input) must be 1 x N x 4H = {(1, n, 4 * h)}, not {gates}"
        )
    if tuple(cont) != (1, n):
        raise ValueError(f"bottom[2] (cont) must be 1 x N = {(1, n)}, not {cont}")
    return LayerShapes([(1, n, h), (1, n, h)], [])


def lstm_layout(node: Node, shape: Shape) -> tuple[int, int, int, bool]:
    """(T, N, I, time_major_3d) of an ``Lstm`` bottom. junhyukoh/caffe-lstm reads T*N rows of
    I = count/rows values, N = lstm_param.batch_size, and writes T*N x H. caffe_ocr's Lstm (the
    CRNN nets) reads a T x N x I bottom and writes T x N x H; a 3-axis bottom whose layer does not
    set batch_size is read that way."""
    p = node.param.lstm_param
    if len(shape) == 3 and not p.HasField("batch_size"):
        return shape[0], shape[1], shape[2], True
    n = int(p.batch_size)
    if n <= 0 or shape[0] % n:
        raise ValueError(f"lstm_param.batch_size {n} must divide the bottom's {shape[0]} rows")
    return shape[0] // n, n, math.prod(shape[1:]), False


@register("Lstm", "shape")
def _lstm_fork(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.lstm_param
    if p.num_output <= 0:
        raise ValueError("lstm_param.num_output must be positive")
    h = int(p.num_output)
    t, n, i, time_major = lstm_layout(node, inputs[0])
    if len(inputs) == 2 and math.prod(inputs[1]) != inputs[1][0]:
        raise ValueError(
            f"bottom[1] (clip) must hold one value per row (num == count), not {inputs[1]}"
        )
    if len(inputs) == 2 and inputs[1][0] != t * n:
        raise ValueError(f"bottom[1] (clip) must have T*N = {t * n} rows, not {inputs[1][0]}")
    top: Shape = (t, n, h) if time_major else (t * n, h)
    return LayerShapes([top], [(4 * h, i), (4 * h, h), (4 * h,)])


@register("ContinuationIndicator", "shape")
def _continuation(node: Node, inputs: list[Shape]) -> LayerShapes:
    p = node.param.continuation_indicator_param
    if p.time_step <= 0 or p.batch_size <= 0:
        raise ValueError("continuation_indicator_param.time_step and batch_size must be positive")
    return LayerShapes([(int(p.time_step), int(p.batch_size))], [])


def _recurrent_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    """Each InnerProduct of the unrolled net starts from recurrent_param's weight filler, the
    biased ones' bias from its bias filler."""
    p = layer.recurrent_param
    static = len(layer.bottom) > 2 + ((2 if layer.type == "LSTM" else 1) if p.expose_hidden else 0)
    fillers = [p.weight_filler, p.bias_filler] + [p.weight_filler] * (1 + static)
    if layer.type == "RNN":
        fillers += [p.weight_filler, p.bias_filler]
    return fillers


def _lstm_fillers(layer: caffe_pb2.LayerParameter) -> list[caffe_pb2.FillerParameter]:
    p = layer.lstm_param
    return [p.weight_filler, p.weight_filler, p.bias_filler]


def _small_uniform(shapes: list[Shape], rng: np.random.Generator) -> list[np.ndarray]:
    """Synthesis: every blob from U(-b, b), b = 1/sqrt(widest input of a weight) (PyTorch's
    recurrent initialisation), so the gates neither saturate nor vanish over the steps."""
    bound = 1.0 / math.sqrt(max([s[1] for s in shapes if len(s) == 2] + [1]))
    return [rng.uniform(-bound, bound, s).astype(np.float32) for s in shapes]


def _step_buffers(node: Node, ins: list[Shape], outs: list[Shape]) -> int:
    """Scratch beyond the tops: every step's pre-activations and gate values (4H each for an
    LSTM, H for an RNN) and the cells, for T x N streams."""
    top = outs[0]
    steps = math.prod(top[:-1])
    width = top[-1]
    return steps * width * (9 if node.type in ("LSTM", "Lstm") else 2)


def _over_time(node: Node, shape: Shape) -> bool:
    """Axis 0 is time: every step depends on the steps before it."""
    return True


def _no_cont_diff(node: Node, bottom: int) -> str | None:
    cont = {"LSTM": 1, "RNN": 1, "LSTMUnit": 2}.get(node.type)
    if bottom == cont:
        return "Cannot backpropagate to sequence indicators."
    return None


def _allow_force(node: Node, bottom: int) -> bool:
    return _no_cont_diff(node, bottom) is None


def _recurrent_settings(layer: caffe_pb2.LayerParameter) -> None:
    if layer.recurrent_param.num_output <= 0:
        raise ValueError("recurrent_param.num_output must be positive")


def _recurrent_tops(layer: caffe_pb2.LayerParameter) -> None:
    _recurrent_settings(layer)
    exposed = (2 if layer.type == "LSTM" else 1) if layer.recurrent_param.expose_hidden else 0
    if len(layer.top) != 1 + exposed:
        raise ValueError(
            f"expose_hidden {'true' if exposed else 'false'} needs {1 + exposed} top(s), "
            f"not {len(layer.top)}"
        )


def _opencv_blob_order(node: Node) -> str | None:
    """Measured with OpenCV 4.14: its Caffe reader takes an LSTM's blobs as (W_h, W_x, b), so a
    BVLC caffemodel (W_xc, b_c, W_hc) fails its shape check or computes another function."""
    if node.type == "LSTM":
        return "OpenCV reads Caffe LSTM blobs as (W_h, W_x, b), not BVLC's (W_xc, b_c, W_hc)"
    return None


describe(
    ("LSTM", "RNN"),
    param_message="recurrent_param",
    opencv_deviation=_opencv_blob_order,
    workspace=_step_buffers,
    fillers=_recurrent_fillers,
    starting_values=_small_uniform,
    mixes_batch=_over_time,
    no_backward=_no_cont_diff,
    force_backward=_allow_force,
    bottoms=(2, 5),
    tops=(1, 3),
    validate=_recurrent_tops,
)
describe(
    "LSTMUnit",
    no_backward=_no_cont_diff,
    force_backward=_allow_force,
    bottoms=3,
    tops=2,
)


def _fork_data_only(node: Node, bottom: int) -> bool:
    """caffe-lstm's Backward writes no diff for the clip bottom, even under force_backward."""
    return bottom == 0


describe(
    "Lstm",
    origin="junhyukoh/caffe-lstm and the caffe_ocr / CRNN ports built on it: clip markers by row",
    param_message="lstm_param",
    force_backward=_fork_data_only,
    workspace=_step_buffers,
    fillers=_lstm_fillers,
    starting_values=_small_uniform,
    mixes_batch=_over_time,
    bottoms=(1, 2),
    tops=1,
)
describe(
    "ContinuationIndicator",
    origin="CRNN ports (caffe_ocr): the sequence markers an Lstm or LSTM reads",
    param_message="continuation_indicator_param",
    shape_only=True,
    bottoms=(0, 1),
    tops=1,
)
