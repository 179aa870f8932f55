"""include/exclude rules by phase, stage and level, with Caffe's NetStateRule semantics
(net.cpp StateMeetsRule/FilterNet): a rule is met when every condition it sets holds; a layer with
include rules is kept when any of them is met; one with exclude rules is dropped when any is met.
The expected sets below are worked out by hand from those rules."""

from __future__ import annotations

import pytest

from caffe_compat.errors import NetDefinitionError
from caffe_compat.ir.load import load_net

RULES = {
    "always": "",
    "train_only": "include { phase: TRAIN }",
    "not_test": "exclude { phase: TEST }",
    "level_ge1": "include { min_level: 1 }",
    "level_le1": "include { max_level: 1 }",
    "level_1_to_2": "include { min_level: 1 max_level: 2 }",
    "stage_a_and_b": 'include { stage: "a" stage: "b" }',
    "stage_a_or_b": 'include { stage: "a" } include { stage: "b" }',
    "not_stage_a": 'include { not_stage: "a" }',
    "exclude_stage_a": 'exclude { stage: "a" }',
    "test_deploy": 'include { phase: TEST stage: "deploy" }',
    "exclude_train_level2": "exclude { phase: TRAIN min_level: 2 }",
    "exclude_a_or_negative": 'exclude { stage: "a" } exclude { max_level: -1 }',
}
NET = 'input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n' + "\n".join(
    f'layer {{ name: "{name}" type: "ReLU" bottom: "data" top: "{name}" {rule} }}'
    for name, rule in RULES.items()
)

STATES = {  # (phase, stages, level) -> layers Caffe keeps
    "test": (
        ("TEST", (), 0),
        {
            "always",
            "level_le1",
            "not_stage_a",
            "exclude_stage_a",
            "exclude_train_level2",
            "exclude_a_or_negative",
        },
    ),
    "train": (
        ("TRAIN", (), 0),
        {
            "always",
            "train_only",
            "not_test",
            "level_le1",
            "not_stage_a",
            "exclude_stage_a",
            "exclude_train_level2",
            "exclude_a_or_negative",
        },
    ),
    "test_a_level1": (
        ("TEST", ("a",), 1),
        {
            "always",
            "level_ge1",
            "level_le1",
            "level_1_to_2",
            "stage_a_or_b",
            "exclude_train_level2",
        },
    ),
    "test_ab_level2": (
        ("TEST", ("a", "b"), 2),
        {
            "always",
            "level_ge1",
            "level_1_to_2",
            "stage_a_and_b",
            "stage_a_or_b",
            "exclude_train_level2",
        },
    ),
    "train_b_deploy_level3": (
        ("TRAIN", ("b", "deploy"), 3),
        {
            "always",
            "train_only",
            "not_test",
            "level_ge1",
            "stage_a_or_b",
            "not_stage_a",
            "exclude_stage_a",
            "exclude_a_or_negative",
        },
    ),
    "test_deploy_level_minus1": (
        ("TEST", ("deploy",), -1),
        {
            "always",
            "level_le1",
            "not_stage_a",
            "exclude_stage_a",
            "test_deploy",
            "exclude_train_level2",
        },
    ),
}


@pytest.mark.parametrize("state", STATES)
def test_layers_kept_per_net_state(tmp_path, state):
    (phase, stages, level), expected = STATES[state]
    path = tmp_path / "rules.prototxt"
    path.write_text(NET)
    loaded = load_net(path, phase=phase, stages=stages, level=level)
    assert {node.name for node in loaded.graph.nodes} == expected


def test_v1_rules_behave_the_same(tmp_path):
    text = """
    input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4
    layers { name: "train_relu" type: RELU bottom: "data" top: "t" include: { phase: TRAIN } }
    layers { name: "test_relu" type: RELU bottom: "data" top: "u" include: { phase: TEST } }
    layers { name: "staged" type: RELU bottom: "data" top: "v" exclude { stage: "x" } }
    """
    path = tmp_path / "v1.prototxt"
    path.write_text(text)
    names = lambda **kw: {n.name for n in load_net(path, **kw).graph.nodes}  # noqa: E731
    assert names(phase="TEST") == {"test_relu", "staged"}
    assert names(phase="TRAIN") == {"train_relu", "staged"}
    assert names(phase="TRAIN", stages=["x"]) == {"train_relu"}


def test_include_and_exclude_together_is_an_error(tmp_path):
    path = tmp_path / "both.prototxt"
    path.write_text(
        'input: "data" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 4\n'
        'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
        "include { phase: TEST } exclude { phase: TRAIN } }"
    )
    with pytest.raises(NetDefinitionError, match=r'layer "r".*include rules or exclude rules'):
        load_net(path)
