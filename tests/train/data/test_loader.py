"""The worker loader: the same batches for any worker count, worker errors as one line."""

from __future__ import annotations

import numpy as np
import pytest
from _data_layers import image_layer, write_images

from caffe_compat.errors import CaffeCompatError
from caffe_compat.train.data import Feeder, make_source
from caffe_compat.train.data.transform import Where

WHERE = Where("data", "Data")


def test_feeder_gives_the_same_batches_with_workers(tmp_path):
    names = write_images(tmp_path, 5)
    (tmp_path / "list.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    lay = image_layer(tmp_path, extra="transform_param { crop_size: 5 mirror: true }")
    serial = Feeder([make_source(lay, "TRAIN", 9, None)], workers=0)
    parallel = Feeder([make_source(lay, "TRAIN", 9, None)], workers=2, start=0)
    try:
        for _ in range(4):
            a, b = serial.next(), parallel.next()
            assert a.keys() == b.keys()
            for key in a:
                assert np.array_equal(a[key].numpy(), b[key].numpy())
        parallel.seek(1)
        serial2 = Feeder([make_source(lay, "TRAIN", 9, None)], workers=0, start=1)
        assert np.array_equal(parallel.next()["data"].numpy(), serial2.next()["data"].numpy())
    finally:
        parallel.close()


def test_feeder_reports_a_worker_error_as_one_line(tmp_path):
    (tmp_path / "list.txt").write_text("nothere.png 0\n")
    feeder = Feeder([make_source(image_layer(tmp_path), "TRAIN", 0, None)], workers=1)
    try:
        with pytest.raises(CaffeCompatError, match=r"nothere\.png") as info:
            feeder.next()
        assert "Traceback" not in str(info.value) and "\n" not in str(info.value)
    finally:
        feeder.close()
