"""Datum records: raw bytes, float_data (unpacked and packed), encoded images; damage as one line."""

from __future__ import annotations

import numpy as np
import pytest
from _data_layers import item

from caffe_compat.errors import CaffeCompatError
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.data.datum import decode_datum, encode_datum
from caffe_compat.train.data.transform import Where

WHERE = Where("data", "Data")


def test_datum_raw_float_and_encoded():
    import cv2

    x = item()
    raw = decode_datum(encode_datum(x, 4), "db: k")
    np.testing.assert_array_equal(raw.item, x)
    assert raw.label == 4
    floats = decode_datum(encode_datum(x.astype(np.float32) / 7, 2), "db: k")
    np.testing.assert_array_equal(floats.item, x.astype(np.float32) / 7)
    photo = np.random.default_rng(3).integers(0, 256, (7, 9, 3)).astype(np.uint8)
    png = cv2.imencode(".png", photo)[1].tobytes()
    encoded = decode_datum(encode_datum(None, 1, encoded=png), "db: k")
    np.testing.assert_array_equal(encoded.item, photo.transpose(2, 0, 1))
    gray = decode_datum(encode_datum(None, 1, encoded=png), "db: k", force_gray=True)
    assert gray.item.shape == (1, 7, 9)


def test_datum_packed_float_data_is_read_too():
    datum = caffe_pb2.Datum(channels=1, height=2, width=2, label=1)
    datum.float_data.extend([1.5, 2.5, 3.5, 4.5])
    # Caffe writes float_data unpacked; another writer may pack it: both are valid protobuf.
    unpacked = datum.SerializeToString()
    packed = unpacked[:6] + bytes([0x32, 16]) + np.float32([1.5, 2.5, 3.5, 4.5]).tobytes()
    for data in (unpacked, packed):
        np.testing.assert_array_equal(
            decode_datum(data, "db: k").item.reshape(-1), [1.5, 2.5, 3.5, 4.5]
        )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            caffe_pb2.Datum(channels=3, height=2, width=2, data=b"abc").SerializeToString(),
            "declares 3x2x2 = 12 values but holds 3 bytes",
        ),
        (caffe_pb2.Datum(channels=0, height=2, width=2).SerializeToString(), "every size must be"),
        (b"\xff\xff\xff", "not a Datum"),
        (caffe_pb2.Datum(encoded=True, data=b"not an image").SerializeToString(), "not an image"),
    ],
)
def test_bad_datums_are_one_line(data, message):
    with pytest.raises(CaffeCompatError, match=message) as info:
        decode_datum(data, "train_lmdb: key 7")
    assert "\n" not in str(info.value) and "train_lmdb" in str(info.value)
