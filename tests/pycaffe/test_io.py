"""caffe.io: Transformer (order, misuse errors), resize, oversample, image loading, protos."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from caffe_compat.proto import caffe_pb2

INPUTS = {"data": (10, 3, 6, 5)}


@pytest.fixture
def transformer(caffe):
    return caffe.io.Transformer(dict(INPUTS))


def test_transformer_misuse_errors_match_pycaffe(transformer):
    with pytest.raises(ValueError, match=r"^Mean channels incompatible with input.$"):
        transformer.set_mean("data", np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"^Mean shape invalid$"):
        transformer.set_mean("data", np.zeros((1, 3, 6, 5)))
    with pytest.raises(
        Exception,
        match=r"^Transpose order needs to have the same number of dimensions as the input\.$",
    ):
        transformer.set_transpose("data", (1, 0))
    with pytest.raises(
        Exception,
        match=r"^Channel swap needs to have the same number of dimensions as the input "
        r"channels\.$",
    ):
        transformer.set_channel_swap("data", (1, 0))
    with pytest.raises(Exception, match=r"^label is not one of the net inputs: \{'data'"):
        transformer.set_raw_scale("label", 255)
    with pytest.raises(Exception, match="is not one of the net inputs"):
        transformer.preprocess("label", np.zeros((6, 5, 3)))


def test_preprocess_order_and_deprocess(transformer):
    rng = np.random.default_rng(0)
    image = rng.random((6, 5, 3)).astype(np.float32)  # H x W x K, RGB in [0, 1]
    mean = np.array([100.0, 110.0, 120.0])
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_channel_swap("data", (2, 1, 0))
    transformer.set_raw_scale("data", 255.0)
    transformer.set_mean("data", mean)
    transformer.set_input_scale("data", 0.5)
    out = transformer.preprocess("data", image.copy())
    expected = (image.transpose(2, 0, 1)[::-1] * 255.0 - mean[:, None, None]) * 0.5
    assert out.shape == (3, 6, 5) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(transformer.deprocess("data", out), image, atol=1e-6)


def test_preprocess_resizes_to_the_input(transformer):
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(1)
    image = rng.random((9, 7, 3)).astype(np.float32) * 0.5 + 0.2
    transformer.set_transpose("data", (2, 0, 1))
    out = transformer.preprocess("data", image)
    low, high = image.min(), image.max()
    unit = (image - low) / (high - low)
    resized = transform.resize(unit, (6, 5), order=1, mode="constant", anti_aliasing=False)
    expected = (resized * (high - low) + low).astype(np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_set_mean_elementwise(transformer):
    transform = pytest.importorskip("skimage.transform")
    same = np.arange(90, dtype=np.float64).reshape(3, 6, 5)
    transformer.set_mean("data", same)
    assert transformer.mean["data"] is same  # the input's own size: kept as given
    rng = np.random.default_rng(2)
    big = rng.random((3, 12, 9)) * 50 + 80  # another size: resized through [0, 1] (PR 5719)
    transformer.set_mean("data", big)
    low, high = big.min(), big.max()
    unit = ((big - low) / (high - low)).transpose(1, 2, 0)
    u_low, u_high = unit.min(), unit.max()
    resized = transform.resize(
        (unit - u_low) / (u_high - u_low), (6, 5), order=1, mode="constant", anti_aliasing=False
    )
    resized = (resized * (u_high - u_low) + u_low).astype(np.float32)
    expected = resized.transpose(2, 0, 1) * (high - low) + low
    np.testing.assert_allclose(transformer.mean["data"], expected, rtol=1e-6)
    assert transformer.mean["data"].shape == (3, 6, 5)


def test_resize_image_paths(caffe):
    flat = np.full((4, 4, 3), 7.0)
    out = caffe.io.resize_image(flat, (2, 6))
    assert out.shape == (2, 6, 3) and out.dtype == np.float32 and np.all(out == 7.0)
    pytest.importorskip("scipy")
    two = np.random.default_rng(3).random((4, 6, 2))  # neither 1 nor 3 channels: ndimage.zoom
    assert caffe.io.resize_image(two, (8, 12)).shape == (8, 12, 2)
    up = caffe.io.resize_image(np.linspace(0, 1, 8).reshape(2, 4, 1), (4, 8))
    assert up.shape == (4, 8, 1) and up.min() >= 0.0 and up.max() <= 1.0


def test_missing_scikit_image_is_named(caffe, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage.transform", None)
    with pytest.raises(ImportError, match=r"resize_image needs scikit-image") as caught:
        caffe.io.resize_image(np.random.default_rng(0).random((4, 4, 3)), (2, 2))
    assert "pip install 'caffe-compat[pycaffe]'" in str(caught.value)


def test_the_pycaffe_extra_brings_scikit_image():
    """pyproject's pycaffe extra is what the message names, and the README says so."""
    from _paths import ROOT

    try:
        import tomllib
    except ImportError:  # Python 3.10: the tomli backport (a dependency there)
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(r.startswith("scikit-image") for r in project["optional-dependencies"]["pycaffe"])
    assert "pip install 'caffe-compat[pycaffe]'" in (ROOT / "README.md").read_text()


def test_oversample_crops(caffe):
    rng = np.random.default_rng(4)
    images = rng.random((2, 9, 10, 3)).astype(np.float32)
    crops = caffe.io.oversample(images, (4, 5))
    assert crops.shape == (20, 4, 5, 3) and crops.dtype == np.float32
    # Corners, then the centre: rows int(4.5 - 2) = 2, columns int(5 - 2.5) = 2.
    starts = [(0, 0), (0, 5), (5, 0), (5, 5), (2, 2)]
    for n, image in enumerate(images):
        for k, (y, x) in enumerate(starts):
            window = image[y : y + 4, x : x + 5]
            np.testing.assert_array_equal(crops[10 * n + k], window)
            np.testing.assert_array_equal(crops[10 * n + 5 + k], window[:, ::-1])


def test_load_image(caffe, tmp_path):
    cv2 = pytest.importorskip("cv2")
    pytest.importorskip("skimage.io")
    rng = np.random.default_rng(5)
    bgr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    img = caffe.io.load_image(str(tmp_path / "c.png"))
    assert img.shape == (7, 9, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, bgr[:, :, ::-1] / 255.0, atol=1e-7)

    gray = rng.integers(0, 256, (5, 4), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    as_color = caffe.io.load_image(str(tmp_path / "g.png"))
    assert as_color.shape == (5, 4, 3)
    np.testing.assert_allclose(as_color[:, :, 1], gray / 255.0, atol=1e-7)
    as_gray = caffe.io.load_image(str(tmp_path / "g.png"), color=False)
    assert as_gray.shape == (5, 4, 1)

    bgra = np.dstack([bgr, np.full((7, 9), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    np.testing.assert_allclose(caffe.io.load_image(str(tmp_path / "a.png")), img, atol=1e-7)


def test_blobproto_conversions(caffe):
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    blob = caffe.io.array_to_blobproto(arr, diff=-arr)
    assert list(blob.shape.dim) == [2, 3, 4]
    back = caffe.io.blobproto_to_array(blob)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, arr)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(blob, return_diff=True), -arr)

    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=1, width=3)
    legacy.data.extend([1, 2, 3, 4, 5, 6])
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)

    payload = caffe.io.arraylist_to_blobprotovector_str([arr, arr[0]])
    assert isinstance(payload, bytes)
    arrays = caffe.io.blobprotovector_str_to_arraylist(payload)
    assert [a.shape for a in arrays] == [(2, 3, 4), (3, 4)]


def test_datum_conversions(caffe):
    pixels = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(pixels, label=3)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 3)
    assert datum.data == pixels.tobytes()
    back = caffe.io.datum_to_array(datum)
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, pixels)

    floats = pixels.astype(np.float32) / 2
    datum = caffe.io.array_to_datum(floats)
    assert not datum.data and not datum.HasField("label")
    np.testing.assert_array_equal(caffe.io.datum_to_array(datum), floats)
    with pytest.raises(ValueError, match=r"^Incorrect array shape.$"):
        caffe.io.array_to_datum(pixels[0])
