"""Caffe's DataTransformer: centred and random crops, mean image at the window, mean values, scale, mirror."""

from __future__ import annotations

import numpy as np
import pytest
from _data_layers import item, transform_param

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io import write_mean
from caffe_compat.train.data.transform import DataTransformer, Where

WHERE = Where("data", "Data")


def test_test_phase_crop_is_centred_and_mean_taken_at_the_window(tmp_path):
    x = item()
    mean = np.random.default_rng(1).uniform(0, 255, (3, 6, 8)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean)
    t = DataTransformer(
        transform_param(f'crop_size: 3 scale: 0.5 mean_file: "{tmp_path / "mean.binaryproto"}"'),
        "TEST",
        WHERE,
    )
    out = t(x, None)
    # Caffe: h_off = (6 - 3) / 2 = 1, w_off = (8 - 3) / 2 = 2; (x - mean[window]) * scale.
    expected = (x[:, 1:4, 2:5].astype(np.float32) - mean[:, 1:4, 2:5]) * np.float32(0.5)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32


def test_mean_values_one_for_all_channels_or_one_each():
    x = item()
    one = DataTransformer(transform_param("mean_value: 10"), "TEST", WHERE)
    np.testing.assert_array_equal(one(x, None), x.astype(np.float32) - 10)
    three = DataTransformer(
        transform_param("mean_value: 1 mean_value: 2 mean_value: 3"), "TEST", WHERE
    )
    np.testing.assert_array_equal(
        three(x, None), x.astype(np.float32) - np.float32([1, 2, 3]).reshape(3, 1, 1)
    )
    two = DataTransformer(transform_param("mean_value: 1 mean_value: 2"), "TEST", WHERE)
    with pytest.raises(CaffeCompatError, match="2 mean_value entries for 3-channel"):
        two(x, None)


def test_train_crop_and_mirror_follow_the_generator_and_stay_in_bounds():
    x = item(1, 10, 10)
    t = DataTransformer(transform_param("crop_size: 4 mirror: true"), "TRAIN", WHERE)
    seen_offsets, flips = set(), set()
    for seed in range(60):
        out = t(x, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        flip = bool(rng.integers(2))
        top, left = int(rng.integers(7)), int(rng.integers(7))
        window = x[:, top : top + 4, left : left + 4].astype(np.float32)
        np.testing.assert_array_equal(out, window[:, :, ::-1] if flip else window)
        seen_offsets.add((top, left))
        flips.add(flip)
    assert flips == {True, False} and len(seen_offsets) > 20


def test_mirror_subtracts_the_mean_before_flipping(tmp_path):
    """Caffe indexes the mean with the unmirrored position (data_transformer.cpp)."""
    x = item(3, 4, 5)
    mean = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_mean(tmp_path / "m.binaryproto", mean)
    t = DataTransformer(
        transform_param(f'mirror: true mean_file: "{tmp_path / "m.binaryproto"}"'), "TEST", WHERE
    )
    rng_seed = next(s for s in range(100) if np.random.default_rng(s).integers(2))
    out = t(x, np.random.default_rng(rng_seed))
    np.testing.assert_array_equal(out, (x.astype(np.float32) - mean)[:, :, ::-1])


def test_transformer_refusals(tmp_path):
    with pytest.raises(CaffeCompatError, match="both force_color and force_gray"):
        DataTransformer(transform_param("force_color: true force_gray: true"), "TRAIN", WHERE)
    write_mean(tmp_path / "m.binaryproto", np.zeros((3, 5, 5), np.float32))
    with pytest.raises(CaffeCompatError, match="mean_file and mean_value"):
        DataTransformer(
            transform_param(f'mean_value: 3 mean_file: "{tmp_path / "m.binaryproto"}"'),
            "TRAIN",
            WHERE,
        )
    t = DataTransformer(
        transform_param(f'mean_file: "{tmp_path / "m.binaryproto"}"'), "TEST", WHERE
    )
    with pytest.raises(CaffeCompatError, match="mean image is 3x5x5 but the items are 3x6x8"):
        t(item(), None)
    big = DataTransformer(transform_param("crop_size: 9"), "TEST", WHERE)
    with pytest.raises(CaffeCompatError, match="crop 9x9 is larger than the 6x8 item"):
        big(item(), None)
