"""Caffe's training data layers: DataTransformer facts, Datum records, LMDB, ImageData lists,
HDF5Data, and the worker loader (same batches for any worker count)."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format

from caffe_compat.errors import CaffeCompatError
from caffe_compat.io import write_mean
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.data import Feeder, make_source
from caffe_compat.train.data.datum import decode_datum, encode_datum
from caffe_compat.train.data.transform import DataTransformer, Where

WHERE = Where("data", "Data")


def transform_param(text: str) -> caffe_pb2.TransformationParameter:
    return text_format.Parse(text, caffe_pb2.TransformationParameter())


def layer(text: str) -> caffe_pb2.LayerParameter:
    return text_format.Parse(text, caffe_pb2.LayerParameter())


def item(c: int = 3, h: int = 6, w: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (c, h, w)).astype(np.uint8)


# --- DataTransformer ---------------------------------------------------------------------------


def test_test_phase_crop_is_centred_and_mean_taken_at_the_window(tmp_path):
    x = item()
    mean = np.random.default_rng(1).uniform(0, 255, (3, 6, 8)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean)
    t = DataTransformer(
        transform_param(f'crop_size: 3 scale: 0.5 mean_file: "{tmp_path / "mean.binaryproto"}"'),
        "TEST",
        WHERE,
    )
    out = t(x, None)
    # Caffe: h_off = (6 - 3) / 2 = 1, w_off = (8 - 3) / 2 = 2; (x - mean[window]) * scale.
    expected = (x[:, 1:4, 2:5].astype(np.float32) - mean[:, 1:4, 2:5]) * np.float32(0.5)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.float32


def test_mean_values_one_for_all_channels_or_one_each():
    x = item()
    one = DataTransformer(transform_param("mean_value: 10"), "TEST", WHERE)
    np.testing.assert_array_equal(one(x, None), x.astype(np.float32) - 10)
    three = DataTransformer(
        transform_param("mean_value: 1 mean_value: 2 mean_value: 3"), "TEST", WHERE
    )
    np.testing.assert_array_equal(
        three(x, None), x.astype(np.float32) - np.float32([1, 2, 3]).reshape(3, 1, 1)
    )
    two = DataTransformer(transform_param("mean_value: 1 mean_value: 2"), "TEST", WHERE)
    with pytest.raises(CaffeCompatError, match="2 mean_value entries for 3-channel"):
        two(x, None)


def test_train_crop_and_mirror_follow_the_generator_and_stay_in_bounds():
    x = item(1, 10, 10)
    t = DataTransformer(transform_param("crop_size: 4 mirror: true"), "TRAIN", WHERE)
    seen_offsets, flips = set(), set()
    for seed in range(60):
        out = t(x, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        flip = bool(rng.integers(2))
        top, left = int(rng.integers(7)), int(rng.integers(7))
        window = x[:, top : top + 4, left : left + 4].astype(np.float32)
        np.testing.assert_array_equal(out, window[:, :, ::-1] if flip else window)
        seen_offsets.add((top, left))
        flips.add(flip)
    assert flips == {True, False} and len(seen_offsets) > 20


def test_mirror_subtracts_the_mean_before_flipping(tmp_path):
    """Caffe indexes the mean with the unmirrored position (data_transformer.cpp)."""
    x = item(3, 4, 5)
    mean = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    write_mean(tmp_path / "m.binaryproto", mean)
    t = DataTransformer(
        transform_param(f'mirror: true mean_file: "{tmp_path / "m.binaryproto"}"'), "TEST", WHERE
    )
    rng_seed = next(s for s in range(100) if np.random.default_rng(s).integers(2))
    out = t(x, np.random.default_rng(rng_seed))
    np.testing.assert_array_equal(out, (x.astype(np.float32) - mean)[:, :, ::-1])


def test_transformer_refusals(tmp_path):
    with pytest.raises(CaffeCompatError, match="both force_color and force_gray"):
        DataTransformer(transform_param("force_color: true force_gray: true"), "TRAIN", WHERE)
    write_mean(tmp_path / "m.binaryproto", np.zeros((3, 5, 5), np.float32))
    with pytest.raises(CaffeCompatError, match="mean_file and mean_value"):
        DataTransformer(
            transform_param(f'mean_value: 3 mean_file: "{tmp_path / "m.binaryproto"}"'),
            "TRAIN",
            WHERE,
        )
    t = DataTransformer(
        transform_param(f'mean_file: "{tmp_path / "m.binaryproto"}"'), "TEST", WHERE
    )
    with pytest.raises(CaffeCompatError, match="mean image is 3x5x5 but the items are 3x6x8"):
        t(item(), None)
    big = DataTransformer(transform_param("crop_size: 9"), "TEST", WHERE)
    with pytest.raises(CaffeCompatError, match="crop 9x9 is larger than the 6x8 item"):
        big(item(), None)


# --- Datum -------------------------------------------------------------------------------------


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


# --- sources -----------------------------------------------------------------------------------


def write_lmdb(path, items, labels):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for index, (x, label) in enumerate(zip(items, labels)):
            txn.put(f"{index:08d}".encode(), encode_datum(x, label))
    env.close()


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
