"""Solver states: binary and HDF5, written as Caffe writes them, read back, damage refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.proto import caffe_pb2
from caffe_compat.train.solverstate import read_solverstate, write_solverstate

RUNS = Path(__file__).parent / "data" / "caffe_runs"


def history(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype(np.float32) for s in [(4, 3, 3, 3), (4,), (3, 36), (3,)]]


@pytest.mark.parametrize("fmt", ["binaryproto", "hdf5"])
def test_round_trip(tmp_path, fmt):
    path = tmp_path / ("s.solverstate.h5" if fmt == "hdf5" else "s.solverstate")
    arrays = history()
    write_solverstate(
        path,
        iter=17,
        current_step=2,
        learned_net="run_iter_17.caffemodel",
        history=arrays,
        format=fmt,
    )
    state = read_solverstate(path)
    assert (state.iter, state.current_step, state.learned_net) == (17, 2, "run_iter_17.caffemodel")
    assert state.format == fmt
    assert len(state.history) == 4
    for got, want in zip(state.history, arrays):
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape


def test_binary_matches_protobuf_serialisation(tmp_path):
    """Byte for byte what C++ protobuf writes for Caffe's SolverState (field-number order)."""
    arrays = history(1)
    path = tmp_path / "s.solverstate"
    write_solverstate(path, iter=5, current_step=0, learned_net="x.caffemodel", history=arrays)
    message = caffe_pb2.SolverState(iter=5, learned_net="x.caffemodel", current_step=0)
    for array in arrays:
        blob = message.history.add()
        blob.shape.dim.extend(array.shape)
        blob.data.extend(array.reshape(-1).tolist())
    assert path.read_bytes() == message.SerializeToString()


def test_hdf5_learned_net_is_a_nul_terminated_string(tmp_path):
    """Caffe's hdf5_load_string reads the stored size into a C string: the terminator must be
    stored (H5LTmake_dataset_string)."""
    import h5py

    path = tmp_path / "s.solverstate.h5"
    write_solverstate(path, iter=1, current_step=0, learned_net="abc", history=[], format="hdf5")
    with h5py.File(path, "r") as handle:
        dataset = handle["learned_net"]
        assert dataset.shape == () and dataset.dtype.itemsize == 4
        assert dataset.id.get_type().get_strpad() == h5py.h5t.STR_NULLTERM
        assert handle["iter"].shape == (1,) and handle["iter"].dtype == np.int32


def test_content_decides_the_format(tmp_path):
    path = tmp_path / "renamed.solverstate"  # HDF5 content, binary name
    write_solverstate(
        path, iter=3, current_step=0, learned_net="", history=history(), format="hdf5"
    )
    assert read_solverstate(path).format == "hdf5"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"iter: 5\nlearned_net: 'x'\n", "text file"),
        (b"\x08\x05\x1a\x10\x3a\x02\x08\x04\x2a", "not a readable SolverState"),
    ],
)
def test_damaged_states_are_one_line(tmp_path, content, message):
    path = tmp_path / "bad.solverstate"
    path.write_bytes(content)
    with pytest.raises(CaffeCompatError, match=message) as info:
        read_solverstate(path)
    assert "\n" not in str(info.value) and "bad.solverstate" in str(info.value)


def test_history_blob_declaring_more_values_than_stored(tmp_path):
    message = caffe_pb2.SolverState(iter=1)
    blob = message.history.add()
    blob.shape.dim.extend([1000, 1000, 1000])  # a billion floats declared, four stored
    blob.data.extend([1, 2, 3, 4])
    path = tmp_path / "lie.solverstate"
    path.write_bytes(message.SerializeToString())
    with pytest.raises(CaffeCompatError, match="history blob 0: shape") as info:
        read_solverstate(path)
    assert "lie.solverstate" in str(info.value)


def test_learned_net_resolves_beside_the_state(tmp_path):
    (tmp_path / "run_iter_4.caffemodel").write_bytes(b"x")
    path = tmp_path / "run_iter_4.solverstate"
    write_solverstate(
        path, iter=4, current_step=0, learned_net="/elsewhere/run_iter_4.caffemodel", history=[]
    )
    assert read_solverstate(path).learned_net_path() == tmp_path / "run_iter_4.caffemodel"


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("restore_binary", "snap_iter_10.solverstate"),
        ("restore_hdf5", "snap_iter_10.solverstate.h5"),
    ],
)
def test_reads_states_real_caffe_wrote(folder, name):
    path = RUNS / folder / name
    if not path.exists():
        pytest.skip(f"{path} not recorded")
    state = read_solverstate(path)
    recorded = np.load(RUNS / f"{folder}.npz")
    assert state.iter == 10
    assert state.learned_net.endswith("snap_iter_10.caffemodel" + (".h5" if "h5" in name else ""))
    count = sum(1 for key in recorded.files if key.endswith("_g"))
    sets = 2 if folder == "restore_hdf5" else 1  # Adam keeps m and v
    assert len(state.history) == sets * count
    for k in range(count):
        assert state.history[k].shape == recorded[f"p{k}_g"].shape[1:]
