"""DEX's expected-age readout against a plain numpy sum."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.app.readouts import expected_age


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_expected_age_matches_numpy_sum_over_batch_and_caffe_shapes():
    prob = _softmax(np.random.default_rng(3).normal(0, 3, (5, 101)))
    reference = np.array([sum(i * row[i] for i in range(101)) for row in prob])
    np.testing.assert_allclose(expected_age(prob), reference, rtol=1e-12)
    np.testing.assert_allclose(expected_age(prob[:, :, None, None]), reference, rtol=1e-12)
    assert expected_age(prob[2]) == pytest.approx(reference[2], rel=1e-12)


def test_expected_age_of_certain_and_uniform_predictions():
    certain = np.zeros(101)
    certain[37] = 1.0
    assert expected_age(certain) == 37.0
    assert expected_age(np.full(101, 1 / 101)) == pytest.approx(50.0)


def test_expected_age_rejects_spatial_outputs():
    with pytest.raises(ValueError, match="probabilities"):
        expected_age(np.zeros((2, 101, 3, 3)))
