"""The Levi-Hassner authors' demo notebook, run with only the import changed.

Their notebook reads the mean with ``caffe.io.blobproto_to_array``, builds a ``caffe.Classifier``
with ``mean``, ``channel_swap=(2, 1, 0)``, ``raw_scale=255``, ``image_dims=(256, 256)`` and calls
``predict([caffe.io.load_image(photo)])``. Its 256x256 mean is larger than the 227x227 input, so
``Transformer.set_mean`` resizes it (BVLC PR 5719; Caffe 1.0 raised there).

The expected predictions are computed here from pycaffe's definitions, without the code under
test: the photo decoded by OpenCV, scikit-image's resize (order 1, mode 'constant', no
anti-aliasing, on the [0, 1]-normalised image), the five crops and their mirrors by hand, the
Transformer's order (transpose, channel swap, raw scale, mean, input scale) and the net run by
``caffe_compat.to_torch`` on the same weights. Tolerance 1e-4 on the averaged probabilities.
"""

from __future__ import annotations

import numpy as np
import pytest

AGE_LIST = [
    "(0, 2)",
    "(4, 6)",
    "(8, 12)",
    "(15, 20)",
    "(25, 32)",
    "(38, 43)",
    "(48, 53)",
    "(60, 100)",
]
CROP = 227
TOL = 1e-4


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """pycaffe's resize_image for 3-channel images, written out."""
    transform = pytest.importorskip("skimage.transform")
    low, high = image.min(), image.max()
    unit = (image - low) / (high - low)
    out = transform.resize(unit, size, order=1, mode="constant", anti_aliasing=False)
    return (out * (high - low) + low).astype(np.float32)


def _expected(photo_rgb01: np.ndarray, mean: np.ndarray, prototxt, weights) -> tuple:
    """(10-crop average, centre-crop prediction) from pycaffe's definitions."""
    import torch

    import caffe_compat

    image = _resize(photo_rgb01, (256, 256))
    low, high = mean.min(), mean.max()
    unit = ((mean - low) / (high - low)).transpose(1, 2, 0)
    mean227 = _resize(unit, (CROP, CROP)).transpose(2, 0, 1) * (high - low) + low

    offsets = [(0, 0), (0, 256 - CROP), (256 - CROP, 0), (256 - CROP, 256 - CROP)]
    offsets.append((int(128 - CROP / 2), int(128 - CROP / 2)))  # 14: int() of 14.5
    crops = [image[y : y + CROP, x : x + CROP] for y, x in offsets]
    crops += [c[:, ::-1] for c in crops]

    def caffe_input(crop: np.ndarray) -> np.ndarray:
        x = crop.astype(np.float32).transpose(2, 0, 1)[[2, 1, 0]]  # transpose, then RGB -> BGR
        x = x * np.float32(255)
        return (x - mean227).astype(np.float32)

    model = caffe_compat.to_torch(caffe_compat.load_net(prototxt, weights).graph)
    with torch.no_grad():
        batch = torch.from_numpy(np.stack([caffe_input(c) for c in crops]))
        prob = model(batch).numpy()
    return prob.mean(axis=0), prob[4]


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    """A non-square face photo written as PNG, and the same pixels as RGB in [0, 1]."""
    cv2 = pytest.importorskip("cv2")
    bgr = np.ascontiguousarray(astronaut[20:230, 140:320])  # 210 x 180, the face
    path = tmp_path_factory.mktemp("photo") / "face.png"
    assert cv2.imwrite(str(path), bgr)
    decoded = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
    return str(path), decoded.astype(np.float32) / np.float32(255)


def test_authors_demo_with_only_the_import_changed(caffe, levi_age, shared, photo):
    prototxt, weights = levi_age
    example_image, rgb01 = photo

    # --- the notebook, transcribed (Python 3 print) -------------------------------------------
    mean_filename = str(shared / "mean.binaryproto")
    with open(mean_filename, "rb") as handle:
        proto_data = handle.read()
    a = caffe.io.caffe_pb2.BlobProto.FromString(proto_data)
    mean = caffe.io.blobproto_to_array(a)[0]

    age_net_pretrained = str(weights)
    age_net_model_file = str(prototxt)
    age_net = caffe.Classifier(
        age_net_model_file,
        age_net_pretrained,
        mean=mean,
        channel_swap=(2, 1, 0),
        raw_scale=255,
        image_dims=(256, 256),
    )
    input_image = caffe.io.load_image(example_image)
    prediction = age_net.predict([input_image])
    print("predicted age:", AGE_LIST[prediction[0].argmax()])
    centre = age_net.predict([input_image], oversample=False)
    # -------------------------------------------------------------------------------------------

    assert mean.shape == (3, 256, 256) and mean.dtype == np.float64
    np.testing.assert_array_equal(input_image, rgb01)  # load_image: RGB floats in [0, 1]
    assert prediction.shape == (1, 8) and centre.shape == (1, 8)

    ten_crop, centre_only = _expected(rgb01, mean, prototxt, weights)
    np.testing.assert_allclose(prediction[0], ten_crop, rtol=0, atol=TOL)
    np.testing.assert_allclose(centre[0], centre_only, rtol=0, atol=TOL)
    # The two modes differ (so each check above can fail on its own).
    assert np.abs(ten_crop - centre_only).max() > 10 * TOL
    # The mean was resized to the input, not rejected.
    assert age_net.transformer.mean["data"].shape == (3, CROP, CROP)
