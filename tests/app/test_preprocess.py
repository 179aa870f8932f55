"""Preprocessing modes against plain numpy references written here, and OpenCV's blobFromImage.

The references resize with cv2.resize (bilinear) exactly as the code under test does; what they
check independently is everything else: crop positions and order (written out by hand), mirroring
along W, where the mean is subtracted, channel order and layout. Images are non-square.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from caffe_compat.app.preprocess import MEAN_CROPS, MODES, average_crops, preprocess
from caffe_compat.errors import CaffeCompatError

# (y, x) of the 227 crops in the 256x256 resize, in caffe.io.oversample's order:
# top-left, top-right, bottom-left, bottom-right, centre ((256 - 227) // 2 = 14).
OFFSETS = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]
BGR_MEANS = (78.4263377603, 87.7689143744, 114.895847746)  # FACTS.md, what OpenCV users pass


def image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image with structure (a gradient plus noise), so crops and mirrors differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(params=["released", "synthetic"])
def mean(request) -> np.ndarray:
    """The released mean.binaryproto (skips without ../shared) or a random 3x256x256 image."""
    if request.param == "released":
        from caffe_compat.io import read_mean

        shared = request.getfixturevalue("shared")
        return read_mean(shared / "mean.binaryproto")
    return np.random.default_rng(7).uniform(60, 140, (3, 256, 256)).astype(np.float32)


def resized_chw(img: np.ndarray) -> np.ndarray:
    out = cv2.resize(img.astype(np.float32), (256, 256), interpolation=cv2.INTER_LINEAR)
    return out.transpose(2, 0, 1)


def ref_oversample_window(img: np.ndarray, mean: np.ndarray) -> np.ndarray:
    r = resized_chw(img)
    crops = [r[:, y : y + 227, x : x + 227] - mean[:, y : y + 227, x : x + 227] for y, x in OFFSETS]
    return np.stack(crops + [c[:, :, ::-1] for c in crops])


def ref_oversample_resize(img: np.ndarray, mean: np.ndarray) -> np.ndarray:
    small = cv2.resize(mean.transpose(1, 2, 0), (227, 227), interpolation=cv2.INTER_LINEAR)
    small = small.transpose(2, 0, 1)
    r = resized_chw(img)
    crops = [r[:, y : y + 227, x : x + 227] for y, x in OFFSETS]
    return np.stack([c - small for c in crops + [c[:, :, ::-1] for c in crops]])


def ref_center(img: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return (resized_chw(img)[:, 14:241, 14:241] - mean[:, 14:241, 14:241])[None]


def close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == np.float32 and got.flags.c_contiguous
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(300, 400), (211, 173)])
def test_oversample_window_mean(shape, mean):
    img = image(*shape)
    prepared = preprocess(img, "oversample", mean=mean)
    close(prepared.data, ref_oversample_window(img, mean))
    assert prepared.mode == "oversample" and prepared.crops == 10
    assert prepared.description.startswith("oversample:")
    assert "own window" in prepared.description


def test_oversample_resized_mean_the_authors_variant(mean):
    img = image(300, 400, seed=1)
    prepared = preprocess(img, "oversample", mean=mean, mean_crop="resize")
    close(prepared.data, ref_oversample_resize(img, mean))
    assert "resized to 227x227" in prepared.description


def test_the_two_mean_variants_really_differ(mean):
    img = image(300, 400)
    window = preprocess(img, "oversample", mean=mean).data
    resized = preprocess(img, "oversample", mean=mean, mean_crop="resize").data
    assert np.abs(window - resized).max() > 0.01


def test_center_crop(mean):
    img = image(240, 320, seed=2)
    prepared = preprocess(img, "center", mean=mean)
    close(prepared.data, ref_center(img, mean))
    assert prepared.crops == 1 and prepared.description.startswith("center:")


def test_per_channel_values_in_the_caffe_modes():
    img = image(300, 400)
    values = np.array(BGR_MEANS, dtype=np.float32)[:, None, None]
    r = resized_chw(img)
    want = [r[:, y : y + 227, x : x + 227] - values for y, x in OFFSETS]
    close(
        preprocess(img, "oversample", mean=BGR_MEANS).data,
        np.stack(want + [c[:, :, ::-1] for c in want]),
    )
    close(preprocess(img, "center", mean=BGR_MEANS).data, (r[:, 14:241, 14:241] - values)[None])
    assert "per-channel mean values" in preprocess(img, "center", mean=BGR_MEANS).description


@pytest.mark.parametrize("shape", [(300, 400), (180, 141), (227, 227), (500, 260)])
def test_opencv_mode_is_blob_from_image(shape):
    img = image(*shape, seed=3)
    want = cv2.dnn.blobFromImage(img, 1.0, (227, 227), BGR_MEANS, swapRB=False)
    prepared = preprocess(img, "opencv", mean=BGR_MEANS)
    close(prepared.data, want)
    assert prepared.crops == 1 and prepared.description.startswith("opencv:")


def test_opencv_mode_with_a_float_image():
    img = image(200, 300).astype(np.float32) + 0.25
    want = cv2.dnn.blobFromImage(img, 1.0, (227, 227), BGR_MEANS, swapRB=False)
    close(preprocess(img, "opencv", mean=BGR_MEANS).data, want)


def test_opencv_mode_reduces_the_released_mean_image_to_the_known_constants(shared):
    from caffe_compat.io import read_mean

    img = image(300, 400, seed=4)
    got = preprocess(img, "opencv", mean=read_mean(shared / "mean.binaryproto")).data
    want = cv2.dnn.blobFromImage(img, 1.0, (227, 227), BGR_MEANS, swapRB=False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)


def test_uint8_and_float_images_agree_in_the_caffe_modes(mean):
    img = image(300, 400)
    for mode in ("oversample", "center"):
        a = preprocess(img, mode, mean=mean).data
        b = preprocess(img.astype(np.float64), mode, mean=mean).data
        np.testing.assert_array_equal(a, b)


def test_a_list_of_images_keeps_each_images_crops_together(mean):
    first, second = image(300, 400, seed=5), image(260, 200, seed=6)
    prepared = preprocess([first, second], "oversample", mean=mean)
    assert prepared.data.shape == (20, 3, 227, 227)
    close(prepared.data[:10], ref_oversample_window(first, mean))
    close(prepared.data[10:], ref_oversample_window(second, mean))


def test_averaging_the_ten_crops():
    probs = np.random.default_rng(0).random((20, 8)).astype(np.float32)
    want = np.stack([probs[:10].mean(axis=0), probs[10:].mean(axis=0)])
    np.testing.assert_allclose(average_crops(probs, 10), want, rtol=1e-6)
    tensor = average_crops(torch.from_numpy(probs), 10)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy(), want, rtol=1e-6)
    prepared = preprocess([image(100, 120), image(90, 80)], "oversample", mean=BGR_MEANS)
    np.testing.assert_allclose(prepared.average(probs), want, rtol=1e-6)
    with pytest.raises(CaffeCompatError, match="do not split into groups of 10"):
        average_crops(probs[:15], 10)


def test_modes_are_named_and_described():
    assert list(MODES) == ["oversample", "center", "opencv"]
    assert "Classifier.predict(oversample=True)" in MODES["oversample"]
    assert "blobFromImage" in MODES["opencv"]
    assert set(MEAN_CROPS) == {"window", "resize"}


@pytest.mark.parametrize(
    "call, text",
    [
        (
            lambda: preprocess(image(50, 60), "tencrop", mean=BGR_MEANS),
            "modes: oversample, center, opencv",
        ),
        (lambda: preprocess(np.zeros((50, 60), np.uint8), mean=BGR_MEANS), "H x W x 3"),
        (lambda: preprocess(np.zeros((50, 60, 3), np.int16), mean=BGR_MEANS), "dtype int16"),
        (lambda: preprocess(image(50, 60), mean=(1.0, 2.0)), "3 per-channel values"),
        (lambda: preprocess(image(50, 60), mean=np.zeros((3, 227, 227))), "mean_crop='resize'"),
        (lambda: preprocess(image(50, 60), mean=BGR_MEANS, mean_crop="shift"), "mean_crop must be"),
        (lambda: preprocess([], mean=BGR_MEANS), "no images"),
    ],
)
def test_bad_input_is_a_one_line_error(call, text):
    with pytest.raises(CaffeCompatError) as info:
        call()
    assert text in str(info.value) and "\n" not in str(info.value)


def test_a_227_mean_image_works_when_resized():
    small = np.full((3, 227, 227), 100.0, np.float32)
    img = image(300, 400)
    got = preprocess(img, "center", mean=small, mean_crop="resize").data
    close(got, (resized_chw(img)[:, 14:241, 14:241] - 100.0)[None])
