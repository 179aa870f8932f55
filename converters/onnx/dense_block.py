"""DenseBlock (senlinuc/caffe_ocr) unrolled into ONNX nodes: per transition Mul/Add (the BN with
its stored statistics folded into a per-channel scale and shift), Relu, [1x1 Conv, Mul/Add,
Relu,] a 3x3 Conv with the kernel flipped (the fork runs a true convolution), and Concat
(shapes/dense_block.py has the blob order and the factor's readings)."""

from __future__ import annotations

import numpy as np
from onnx import NodeProto, TensorProto

from ...ir.graph import Node
from ...ir.infer import require_weights
from ...registry import register
from ...shapes.dense_block import affine, dense_block_plan, transitions
from ._base import OnnxContext, OnnxOut


@register("DenseBlock", "onnx")
def _dense_block(node: Node, ctx: OnnxContext) -> OnnxOut:
    require_weights(node)
    plan = dense_block_plan(node, ctx.in_shapes[0][1])
    factor = node.blobs[-1]
    nodes: list[NodeProto] = []
    inits: list[TensorProto] = []
    merged = ctx.inputs[0]

    def bn_relu(x: str, bn: tuple, tag: str) -> str:
        a, c = affine(bn, factor)
        scale = ctx.tensor(f"{tag}/a", a.astype(np.float32).reshape(1, -1, 1, 1))
        shift = ctx.tensor(f"{tag}/c", c.astype(np.float32).reshape(1, -1, 1, 1))
        inits.extend([scale, shift])
        scaled, shifted, out = ctx.name(f"{tag}/scaled"), ctx.name(f"{tag}/bn"), ctx.name(tag)
        nodes.extend(
            [
                ctx.op("Mul", [x, scale.name], [scaled], f"{tag}/scale"),
                ctx.op("Add", [scaled, shift.name], [shifted], f"{tag}/shift"),
                ctx.op("Relu", [shifted], [out], f"{tag}/relu"),
            ]
        )
        return out

    for i, step in enumerate(transitions(plan, node.blobs)):
        y = bn_relu(merged, step.bn, f"t{i}")
        if step.filter1 is not None:
            w1 = ctx.tensor(f"t{i}/w1", np.asarray(step.filter1, np.float32))
            inits.append(w1)
            conv1 = ctx.name(f"t{i}/conv1")
            nodes.append(ctx.op("Conv", [y, w1.name], [conv1], f"t{i}/conv1", kernel_shape=[1, 1]))
            y = bn_relu(conv1, step.bn_bc, f"t{i}/bc")
        w3 = ctx.tensor(f"t{i}/w3", np.asarray(step.filter3, np.float32)[:, :, ::-1, ::-1])
        inits.append(w3)
        new = ctx.name(f"t{i}/new")
        nodes.append(
            ctx.op("Conv", [y, w3.name], [new], f"t{i}/conv", kernel_shape=[3, 3], pads=[1] * 4)
        )
        last = i == plan.transitions - 1
        out = ctx.outputs[0] if last else ctx.name(f"t{i}/merged")
        nodes.append(ctx.op("Concat", [merged, new], [out], f"t{i}/concat", axis=1))
        merged = out
    if plan.transitions == 0:
        nodes.append(ctx.op("Identity", [merged], ctx.outputs))
    return OnnxOut(nodes, inits)
