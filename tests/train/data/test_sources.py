"""The data layers' batch streams: ImageData lists, HDF5Data files, and real Caffe's Data layer."""

from __future__ import annotations

import numpy as np
import pytest
from _data_layers import image_layer, layer, write_images, write_lmdb
from google.protobuf import text_format

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io import write_mean
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.data import make_source
from caffe_compat.train.data.transform import Where

WHERE = Where("data", "Data")


def test_image_data_list_root_folder_resize_and_labels(tmp_path):
    names = write_images(tmp_path, 3)
    (tmp_path / "list.txt").write_text("".join(f"{n} {7 - i}\n" for i, n in enumerate(names)))
    source = make_source(
        image_layer(tmp_path, params="new_height: 6 new_width: 4"), "TEST", seed=0, path=None
    )
    assert source.top_shapes() == {"data": (2, 3, 6, 4), "label": (2,)}
    batch = source.batch(1)  # images 2, 0
    np.testing.assert_array_equal(batch["label"], [5, 7])
    assert batch["data"].shape == (2, 3, 6, 4)
    assert batch["data"][0, 0, 3, 2] == 40  # flat image 2 stays flat after resizing


def test_image_data_shuffle_is_a_permutation_per_pass_and_reproducible(tmp_path):
    names = write_images(tmp_path, 6)
    (tmp_path / "list.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    make = lambda seed: make_source(  # noqa: E731
        image_layer(tmp_path, params="shuffle: true"), "TRAIN", seed=seed, path=None
    )
    a, b, c = make(3), make(3), make(4)
    labels = lambda s: np.concatenate([s.batch(i)["label"] for i in range(6)])  # noqa: E731
    first = labels(a)
    np.testing.assert_array_equal(first, labels(b))
    assert sorted(first[:6]) == list(range(6)) and sorted(first[6:]) == list(range(6))
    assert not np.array_equal(first, labels(c))


def test_image_list_errors_name_file_and_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.png 1\nb.png\n")
    with pytest.raises(CaffeCompatError, match=r"line 2: expected 'IMAGE LABEL'"):
        make_source(image_layer(tmp_path), "TRAIN", seed=0, path=None)
    (tmp_path / "list.txt").write_text("missing.png 1\n")
    source = make_source(image_layer(tmp_path), "TRAIN", seed=0, path=None)
    with pytest.raises(CaffeCompatError, match=r"missing\.png") as info:
        source.batch(0)
    assert "\n" not in str(info.value)


def test_hdf5_data_runs_through_files_and_wraps(tmp_path):
    import h5py

    files = []
    for index, rows in enumerate((3, 2)):
        name = tmp_path / f"part{index}.h5"
        with h5py.File(name, "w") as handle:
            handle["data"] = np.arange(rows * 2, dtype=np.float32).reshape(rows, 2) + 100 * index
            handle["label"] = np.arange(rows, dtype=np.int32) + 10 * index
        files.append(str(name))
    (tmp_path / "list.txt").write_text("\n".join(files) + "\n")
    source = make_source(
        layer(
            f'name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: '
            f'"{tmp_path / "list.txt"}" batch_size: 4 }}'
        ),
        "TRAIN",
        seed=0,
        path=None,
    )
    assert source.top_shapes() == {"data": (4, 2), "label": (4,)}
    np.testing.assert_array_equal(source.batch(0)["label"], [0, 1, 2, 10])
    np.testing.assert_array_equal(source.batch(1)["label"], [11, 0, 1, 2])
    np.testing.assert_array_equal(source.batch(1)["data"][0], [102, 103])


@pytest.mark.parametrize("case", ["mean_file", "mean_values", "float_datums"])
def test_data_layer_matches_real_caffe(tmp_path, case):
    """Real Caffe's Data layer (recorded by data/caffe_runs/record_data.py) on an LMDB of raw
    Datums in the TEST phase: centred crops, mean file or values, scale, labels, and the wrap
    from the last record to the first, batch by batch."""
    from _caffe_runs import RUNS

    recorded = np.load(RUNS / "data_layer.npz")
    items = recorded["floats"] if case == "float_datums" else recorded["items"]
    write_lmdb(tmp_path / "db", list(items), [int(v) for v in recorded["labels"]])
    write_mean(tmp_path / "mean.binaryproto", recorded["mean"])
    text = (RUNS / f"data_layer.{case}.prototxt").read_text()
    text = text.replace('"DB"', f'"{tmp_path / "db"}"').replace(
        '"MEAN"', f'"{tmp_path / "mean.binaryproto"}"'
    )
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    source = make_source(net.layer[0], "TEST", seed=0, path=None)
    for batch in range(3):
        ours = source.batch(batch)
        np.testing.assert_array_equal(ours["label"], recorded[f"{case}_label{batch}"])
        np.testing.assert_allclose(
            ours["data"], recorded[f"{case}_data{batch}"], rtol=1e-6, atol=1e-5
        )
