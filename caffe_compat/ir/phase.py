"""Caffe's NetState rules: which layers a net has in a given phase, stage set and level."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import NetDefinitionError
from ..proto import caffe_pb2


@dataclass(frozen=True)
class NetState:
    phase: str = "TEST"  # "TRAIN" or "TEST"
    stages: frozenset[str] = field(default_factory=frozenset)
    level: int = 0

    @classmethod
    def make(cls, phase: str = "TEST", stages: Iterable[str] = (), level: int = 0) -> NetState:
        phase = phase.upper()
        if phase not in ("TRAIN", "TEST"):
            raise NetDefinitionError(f"phase must be TRAIN or TEST, not {phase!r}")
        return cls(phase, frozenset(stages), level)


def meets_rule(state: NetState, rule: caffe_pb2.NetStateRule) -> bool:
    """Caffe's StateMeetsRule."""
    if rule.HasField("phase") and caffe_pb2.Phase.Name(rule.phase) != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(stage not in state.stages for stage in rule.stage):
        return False
    return not any(stage in state.stages for stage in rule.not_stage)


def layer_included(state: NetState, layer: caffe_pb2.LayerParameter) -> bool:
    """Caffe's FilterNet: any include rule met, or no exclude rule met, or no rules at all."""
    if layer.include and layer.exclude:
        raise NetDefinitionError(
            "a layer may have include rules or exclude rules, not both",
            layer=layer.name,
            layer_type=layer.type,
        )
    if layer.include:
        return any(meets_rule(state, rule) for rule in layer.include)
    return not any(meets_rule(state, rule) for rule in layer.exclude)
