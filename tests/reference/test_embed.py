"""Embed: values pick rows of the table (cast toward zero, as static_cast<int>), plus bias."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError

TEXT = 'layer { name: "e" type: "Embed" bottom: "data" top: "e" embed_param { num_output: 3 input_dim: 4 } }'


def test_rows_and_bias(run_layers):
    table, bias = np.arange(12.0).reshape(4, 3), np.array([0.5, -1, 2])
    x = np.array([[0.0, 3.0], [2.9, 1.0]])
    out = run_layers(TEXT, {"e": [table, bias]}, data=x)["e"]
    np.testing.assert_array_equal(out, table[[[0, 3], [2, 1]]] + bias)


def test_an_index_outside_the_table_names_the_layer(run_layers):
    with pytest.raises(
        CaffeCompatError, match=r'layer "e" \(Embed\): index 4 is outside the 4 rows'
    ):
        run_layers(TEXT, {"e": [np.zeros((4, 3)), np.zeros(3)]}, data=np.array([[1.0, 4.0]]))


# --- backward against central differences (Caffe's GradientChecker) ---------------------------


def test_embed_backward_reaches_the_table_only(grad_check):
    rng = np.random.default_rng(3)
    report = grad_check(
        'layer { name: "e" type: "Embed" bottom: "data" top: "e" '
        "embed_param { num_output: 3 input_dim: 4 } }",
        {"e": [rng.normal(size=(4, 3)), rng.normal(size=3)]},
        data=np.array([[0, 3], [2, 3.0]]),
    )
    assert report.checked == 4 * 3 + 3  # the indices get no diff (Caffe refuses one)
