"""The databases of Caffe's Data layer: LMDB in key order, LevelDB in one process, one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
from _data_layers import item, layer, write_lmdb

from caffe_compat.errors import CaffeCompatError
from caffe_compat.train.data import Feeder, make_source
from caffe_compat.train.data.datum import encode_datum
from caffe_compat.train.data.transform import Where

WHERE = Where("data", "Data")


def test_lmdb_data_layer_cycles_in_key_order(tmp_path):
    items = [item(seed=i) for i in range(5)]
    write_lmdb(tmp_path / "db", items, range(5))
    source = make_source(
        layer(
            f'name: "data" type: "Data" top: "data" top: "label" data_param {{ source: '
            f'"{tmp_path / "db"}" backend: LMDB batch_size: 3 }} transform_param {{ scale: 0.5 }}'
        ),
        "TEST",
        seed=1,
        path=None,
    )
    assert source.top_shapes() == {"data": (3, 3, 6, 8), "label": (3,)}
    first, second = source.batch(0), source.batch(1)
    np.testing.assert_array_equal(first["label"], [0, 1, 2])
    np.testing.assert_array_equal(second["label"], [3, 4, 0])  # wraps to the first record
    np.testing.assert_array_equal(second["data"][2], items[0].astype(np.float32) * 0.5)


def test_missing_database_and_backend_package_are_one_line(tmp_path):
    with pytest.raises(CaffeCompatError) as info:
        make_source(
            layer(
                'name: "data" type: "Data" top: "data" data_param { source: "/nonexistent/db" '
                "backend: LMDB batch_size: 3 }"
            ),
            "TRAIN",
            seed=1,
            path=None,
        )
    assert "/nonexistent/db" in str(info.value) and "\n" not in str(info.value)


def test_leveldb_data_layer(tmp_path):
    """LevelDB (Caffe's default backend) through plyvel, read in the main process."""
    plyvel = pytest.importorskip("plyvel")
    items = [item(seed=i) for i in range(4)]
    db = plyvel.DB(str(tmp_path / "db"), create_if_missing=True)
    for index, x in enumerate(items):
        db.put(f"{index:08d}".encode(), encode_datum(x, index + 1))
    db.close()
    lay = layer(
        f'name: "data" type: "Data" top: "data" top: "label" data_param {{ source: '
        f'"{tmp_path / "db"}" batch_size: 3 }} transform_param {{ crop_size: 4 }}'
    )
    source = make_source(lay, "TEST", seed=0, path=None)
    feeder = Feeder([source], workers=2)
    assert feeder.workers == 0  # one process per LevelDB
    batch = feeder.next()
    np.testing.assert_array_equal(batch["label"].numpy(), [1, 2, 3])
    np.testing.assert_array_equal(batch["data"].numpy()[0], items[0][:, 1:5, 2:6])
