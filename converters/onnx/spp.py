"""SPP in ONNX: each level is the Pooling converter's graph on SPPLayer's parameters (static
sizes), then Flatten and one Concat."""

from __future__ import annotations

import dataclasses

from ...ir.graph import Node, Shape
from ...registry import builtin_entry, register
from ...shapes.spp import spp_levels
from ._base import OnnxContext, OnnxOut


@dataclasses.dataclass(frozen=True)
class _LevelContext(OnnxContext):
    """The Pooling converter's context for one level: its own output name and shapes."""

    level_in: Shape = ()
    level_out: Shape = ()
    level_name: str = ""

    @property
    def outputs(self) -> list[str]:
        return [self.level_name]

    @property
    def in_shapes(self) -> list[Shape]:
        return [self.level_in]

    @property
    def out_shapes(self) -> list[Shape]:
        return [self.level_out]


@register("SPP", "onnx")
def _spp(node: Node, ctx: OnnxContext) -> OnnxOut:
    from ...proto import caffe_pb2

    n, c, h, w = ctx.in_shapes[0]
    levels = spp_levels(node.param.spp_param, h, w)
    pool = builtin_entry("Pooling", "onnx")
    assert pool is not None
    nodes, inits, flat = [], [], []
    for index, (param, out) in enumerate(levels):
        layer = caffe_pb2.LayerParameter()
        layer.CopyFrom(node.param)
        layer.pooling_param.CopyFrom(param)
        level = Node(f"{node.name}/level{index}", "Pooling", layer, node.inputs, node.outputs)
        name = ctx.outputs[0] if len(levels) == 1 else ctx.name(f"level{index}")
        sub = _LevelContext(ctx.graph, level, ctx.opset, (n, c, h, w), (n, c, *out), name)
        result = pool.fn(level, sub)
        nodes += result.nodes
        inits += result.initializers
        if len(levels) > 1:
            flat.append(ctx.name(f"flat{index}"))
            nodes.append(ctx.op("Flatten", [name], [flat[-1]], f"flatten{index}", axis=1))
    if len(levels) > 1:
        nodes.append(ctx.op("Concat", flat, ctx.outputs, "concat", axis=1))
    return OnnxOut(nodes, inits)
