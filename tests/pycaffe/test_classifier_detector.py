"""caffe.Classifier over several photos and caffe.Detector windows, on a small 3-channel net.

Expected values follow classifier.py / detector.py by hand (scikit-image resize, crops by index,
the Transformer's order) and run the net through ``caffe_compat.to_torch``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import caffe_compat

SMALL = """
name: "small"
input: "data"
input_shape { dim: 4 dim: 3 dim: 8 dim: 8 }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
MEAN = np.array([0.4, 0.5, 0.6]) * 255


def _resize(image, size):
    transform = pytest.importorskip("skimage.transform")
    low, high = image.min(), image.max()
    out = transform.resize((image - low) / (high - low), size, order=1, mode="constant",
                           anti_aliasing=False)  # fmt: skip
    return (out * (high - low) + low).astype(np.float32)


def _prepare(crop):
    """transpose (2, 0, 1), channel swap (2, 1, 0), raw scale 255, per-channel mean."""
    x = crop.transpose(2, 0, 1)[[2, 1, 0]] * np.float32(255)
    return (x - MEAN[:, None, None]).astype(np.float32)


@pytest.fixture
def small(caffe, write_net, tmp_path):
    caffe.set_random_seed(1)
    prototxt = write_net(SMALL)
    weights = str(tmp_path / "small.caffemodel")
    caffe.Net(prototxt, caffe.TEST).save(weights)
    model = caffe_compat.to_torch(caffe_compat.load_net(prototxt, weights).graph)

    def run(batch):
        with torch.no_grad():
            return model(torch.from_numpy(np.stack(batch))).numpy()

    return prototxt, weights, run


def test_classifier_oversamples_each_photo(caffe, small):
    prototxt, weights, run = small
    net = caffe.Classifier(prototxt, weights, image_dims=(11, 10), mean=MEAN,
                           raw_scale=255, channel_swap=(2, 1, 0))  # fmt: skip
    rng = np.random.default_rng(0)
    photos = [rng.random((15, 13, 3)).astype(np.float32) for _ in range(3)]
    got = net.predict(photos)  # 30 crops: forward_all in batches of 4, the last one padded
    assert got.shape == (3, 4)
    starts = [(0, 0), (0, 2), (3, 0), (3, 2), (1, 1)]  # centre: int(5.5 - 4), int(5 - 4)
    for photo, row in zip(photos, got):
        image = _resize(photo, (11, 10))
        crops = [image[y : y + 8, x : x + 8] for y, x in starts]
        crops += [c[:, ::-1] for c in crops]
        expected = run([_prepare(c) for c in crops]).mean(axis=0)
        np.testing.assert_allclose(row, expected, rtol=0, atol=1e-6)
    centre = net.predict(photos, oversample=False)
    for photo, row in zip(photos, centre):
        crop = _resize(photo, (11, 10))[1:9, 1:9]
        np.testing.assert_allclose(row, run([_prepare(crop)])[0], rtol=0, atol=1e-6)


def test_detector_windows_and_context(caffe, small, tmp_path):
    cv2 = pytest.importorskip("cv2")
    prototxt, weights, run = small
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)
    path = str(tmp_path / "scene.png")
    cv2.imwrite(path, bgr)
    rgb = bgr[:, :, ::-1].astype(np.float32) / np.float32(255)
    windows = np.array([[2, 3, 20, 30], [10, 10, 29, 29]])

    det = caffe.Detector(prototxt, weights, mean=MEAN, raw_scale=255, channel_swap=(2, 1, 0))
    found = det.detect_windows([(path, windows)])
    assert [d["filename"] for d in found] == [path, path]
    for d, (y0, x0, y1, x1) in zip(found, windows):
        expected = run([_prepare(_resize(rgb[y0:y1, x0:x1], (8, 8)))])[0]
        np.testing.assert_allclose(d["prediction"], expected, rtol=0, atol=1e-6)

    padded = caffe.Detector(prototxt, weights, mean=MEAN, raw_scale=255,
                            channel_swap=(2, 1, 0), context_pad=1)  # fmt: skip
    # Window 10..29 (20 px) grows by 8 / 6 around its centre to rows and columns 7..33.
    crop = padded.crop(rgb, windows[1])
    np.testing.assert_allclose(crop, _resize(rgb[7:33, 7:33], (8, 8)), atol=1e-6)
    # At the border, the part outside the image is the mean, in [0, 1] RGB.
    corner = padded.crop(rgb, np.array([0, 0, 17, 17]))
    np.testing.assert_allclose(corner[0, 0], MEAN[::-1] / 255, atol=1e-6)
