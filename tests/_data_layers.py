"""Small Caffe data-layer fixtures for the tests of caffe_compat/train/data."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_compat.proto import caffe_pb2
from caffe_compat.train.data.datum import encode_datum


def transform_param(text: str) -> caffe_pb2.TransformationParameter:
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def item(c: int = 3, h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (c, h, w)).astype(np.uint8)


def write_lmdb(path, items, labels):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for index, (x, label) in enumerate(zip(items, labels)):
            txn.put(f"{index:08d}".encode(), encode_datum(x, label))
    env.close()


def write_images(folder, count, size=(12, 10)):
    import cv2

    names = []
    for index in range(count):
        photo = np.full((*size, 3), index * 20, np.uint8)
        photo[0, 0] = (index, 2 * index, 3 * index)
        name = f"img{index}.png"
        cv2.imwrite(str(folder / name), photo)
        names.append(name)
    return names


def image_layer(tmp_path, extra: str = "", params: str = "") -> caffe_pb2.LayerParameter:
    return layer(
        f'name: "data" type: "ImageData" top: "data" top: "label" image_data_param {{ source: '
        f'"{tmp_path / "list.txt"}" batch_size: 2 root_folder: "{tmp_path}/" {params} }} {extra}'
    )
