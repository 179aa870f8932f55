"""Mean images (mean.binaryproto): exact round trip, the released Levi-Hassner mean, wrong dims."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat.errors import BlobError, FileFormatError
from caffe_compat.io import read_mean, write_mean
from caffe_compat.proto import caffe_pb2


def test_round_trip_is_exact(tmp_path):
    mean = np.random.default_rng(0).uniform(0, 255, (3, 5, 7)).astype(np.float32)
    path = tmp_path / "mean.binaryproto"
    write_mean(path, mean)
    blob = caffe_pb2.BlobProto.FromString(path.read_bytes())  # Caffe's legacy 1xCxHxW header
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 7)
    read = read_mean(path)
    assert read.dtype == np.float32 and read.shape == (3, 5, 7)
    assert np.array_equal(read, mean)


def test_shape_field_and_double_data_means(tmp_path):
    """Newer files use BlobShape; some tools wrote double_data."""
    values = np.arange(2 * 3 * 4, dtype=np.float64) / 7
    blob = caffe_pb2.BlobProto(double_data=values.tolist())
    blob.shape.dim.extend([1, 2, 3, 4])
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    assert np.array_equal(read_mean(path), values.astype(np.float32).reshape(2, 3, 4))


def test_released_levi_hassner_mean(shared):
    mean = read_mean(shared / "mean.binaryproto")
    assert mean.shape == (3, 256, 256) and mean.dtype == np.float32
    per_channel = mean.reshape(3, -1).astype(np.float64).mean(axis=1)
    np.testing.assert_allclose(
        per_channel, [78.4263377603, 87.7689143744, 114.895847746], rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    "dims",
    [(2, 3, 4, 5), (4, 5), (1, 1, 1, 3, 4), (1, 0, 4, 4)],
    ids=["batch2", "2d", "5d", "empty"],
)
def test_mean_with_wrong_dims(tmp_path, dims):
    blob = caffe_pb2.BlobProto(data=[1.0] * int(np.prod(dims)))
    blob.shape.dim.extend(dims)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(BlobError, match=r"mean\.binaryproto: expected one 1xCxHxW .* found shape"):
        read_mean(path)


def test_mean_whose_data_disagrees_with_its_header(tmp_path):
    blob = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=4, data=[1.0] * 47)
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(BlobError, match=r"shape \[1, 3, 4, 4\] declares 48 values .* holds 47"):
        read_mean(path)


def test_write_mean_wants_chw():
    with pytest.raises(ValueError, match="C, H, W"):
        write_mean("unused.binaryproto", np.zeros((1, 3, 4, 4), np.float32))


def test_caffemodel_given_as_mean(tmp_path, small_net, blobs):
    from caffe_compat.io import write_caffemodel

    path = tmp_path / "net.caffemodel"
    write_caffemodel(path, small_net, blobs)
    with pytest.raises(FileFormatError, match=r"this is a caffemodel .*, not a binaryproto mean"):
        read_mean(path)
