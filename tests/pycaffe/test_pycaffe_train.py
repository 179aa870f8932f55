"""pycaffe's training face: train/val nets, backward, the solvers.

Judged against real BVLC Caffe: the forward/backward cases of tests/train/data/caffe (every
blob's data and diff, parameter diffs after one and two backward passes, BatchNorm's sums,
recorded with real pycaffe) and the solver runs of tests/train/data/caffe_runs (weights and
gradients at every iteration, recorded through pycaffe's own callbacks), both run here through
``caffe_compat.pycaffe`` exactly as a pycaffe script would. Then the facts BVLC's own
python/caffe/test suite checks (test_net.py, test_solver.py, test_net_spec.py,
test_layer_type_list.py, test_nccl.py), restated with hand-computed values.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import h5py
import numpy as np
import pytest
from _caffe_runs import CASES as RUN_CASES
from _caffe_runs import RUNS, load_run, relative_error

from caffe_compat import registry
from caffe_compat.errors import CaffeCompatError

ROOT = Path(__file__).resolve().parents[2]
RECORDED = ROOT / "tests" / "train" / "data" / "caffe"
NET_CASES = sorted(p.stem for p in RECORDED.glob("*.prototxt"))
FAST_RUNS = {"sgd_step", "adam_frozen_l1", "clip_iter_size2"}  # the rest: train tier


def _error(mine, theirs, floor: float = 1e-6) -> float:
    mine, theirs = np.asarray(mine, np.float64), np.asarray(theirs, np.float64)
    assert mine.size == theirs.size, (mine.shape, theirs.shape)
    scale = max(float(np.abs(theirs).max(initial=0.0)), floor)
    return float(np.abs(mine.reshape(-1) - theirs.reshape(-1)).max(initial=0.0)) / scale


# --- against real Caffe ---------------------------------------------------------------------


@pytest.mark.parametrize("case", NET_CASES)
def test_forward_backward_match_real_pycaffe(caffe, case, monkeypatch):
    """Blob names in Caffe's order (splits, ``(automatic)`` loss tops), then every blob's data
    and diff and every parameter diff within 1e-5 x max of real Caffe's; a second backward adds
    to the parameter diffs; BatchNorm's sums move as Caffe's."""
    monkeypatch.chdir(ROOT)  # InfogainLoss's source is relative to the working folder
    recorded = np.load(RECORDED / f"{case}.npz")
    phase = caffe.TEST if case.endswith("_test") else caffe.TRAIN
    net = caffe.Net(str(RECORDED / f"{case}.prototxt"), phase)
    assert list(net.blobs) == [k[5:] for k in recorded.files if k.startswith("data/")]
    for key in recorded.files:
        kind, _, name = key.partition("/")
        if kind == "param":
            layer, index = name.split("/")
            net.params[layer][int(index)].data[...] = recorded[key]
        elif kind == "input":
            net.blobs[name].data[...] = recorded[key]
    diffs = [recorded[k] for k in recorded.files if k.startswith(("diff/", "param_diff"))]
    floor = 1e-2 * max(float(np.abs(d).max(initial=0.0)) for d in diffs)
    errors: dict[str, float] = {}
    net.forward()
    net.backward()
    for key in recorded.files:
        kind, _, name = key.partition("/")
        if kind in ("data", "diff"):
            blob = net.blobs[name]
            mine = blob.data if kind == "data" else blob.diff
            errors[key] = _error(mine, recorded[key], floor if kind == "diff" else 1e-6)
        elif kind == "param_diff":
            layer, index = name.split("/")
            errors[key] = _error(net.params[layer][int(index)].diff, recorded[key], floor)
    net.forward()
    net.backward()
    for key in recorded.files:
        kind, _, name = key.partition("/")
        if kind in ("param_diff2", "after"):
            layer, index = name.split("/")
            blob = net.params[layer][int(index)]
            diff = kind == "param_diff2"
            errors[key] = _error(
                blob.diff if diff else blob.data, recorded[key], floor if diff else 1e-6
            )
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-5, f"{worst}: {errors[worst]:.3g} x max from real Caffe"


def materialise(run, folder: Path, rows: int | None = None) -> Path:
    """A recorded run's data (HDF5), net and solver written into ``folder``."""
    with h5py.File(folder / "data.h5", "w") as handle:
        handle["data"] = run.arrays["data"][:rows]
        handle["label"] = run.arrays["label"][:rows]
    (folder / "data.txt").write_text(f"{folder / 'data.h5'}\n")
    net = (RUNS / f"{run.name}.net.prototxt").read_text()
    (folder / "net.prototxt").write_text(net.replace('"data.txt"', f'"{folder / "data.txt"}"'))
    solver = (RUNS / f"{run.name}.solver.prototxt").read_text()
    solver = solver.replace('"net.prototxt"', f'"{folder / "net.prototxt"}"')
    solver = solver.replace('snapshot_prefix: "snap"', f'snapshot_prefix: "{folder / "snap"}"')
    (folder / "solver.prototxt").write_text(solver)
    return folder / "solver.prototxt"


def _learnable(solver, run) -> list:
    """The run's blobs (Caffe's learnable order, "layer:index") in the pycaffe net."""
    blobs = []
    for entry in run.names:
        layer, index = entry.rsplit(":", 1)
        blobs.append(solver.net.params[layer][int(index)])
    return blobs


@pytest.mark.parametrize(
    "name",
    [
        c if c in FAST_RUNS else pytest.param(c, marks=pytest.mark.train)
        for c in RUN_CASES
        if not c.startswith("restore")
    ],
)
def test_solver_replays_real_caffe(caffe, tmp_path, name):
    """``caffe.get_solver`` on Caffe's recorded run, from Caffe's initial weights: the weights
    and diffs an ``on_gradients_ready`` callback sees at every iteration, and the final weights,
    within 1e-4 x max of what the same callback saw in real Caffe."""
    run = load_run(name)
    solver = caffe.get_solver(str(materialise(run, tmp_path)))
    assert solver.type == run.solver.type
    blobs = _learnable(solver, run)
    for k, blob in enumerate(blobs):
        start = run.weights(k)[0]
        blob.data[...] = np.zeros_like(start) if run.statistics[k] else start
    seen_w, seen_g, order = [], [], []
    solver.add_callback(
        lambda: order.append("start"),
        lambda: (
            order.append("ready"),
            seen_w.append([b.data.copy() for b in blobs]),
            seen_g.append([b.diff.copy() for b in blobs]),
        ),
    )
    solver.step(run.steps)
    assert solver.iter == run.steps and order[:4] == ["start", "ready", "start", "ready"]
    worst_w = worst_g = 0.0
    for t in range(run.steps):
        floor = 1e-2 * max(float(np.abs(run.grads(k)[t]).max()) for k in range(len(blobs)))
        for k in range(len(blobs)):
            worst_w = max(worst_w, relative_error(seen_w[t][k], run.weights(k)[t]))
            theirs = run.grads(k)[t]
            scale = max(float(np.abs(theirs).max()), floor)
            worst_g = max(worst_g, float(np.abs(seen_g[t][k] - theirs).max()) / scale)
    for k, blob in enumerate(blobs):
        worst_w = max(worst_w, relative_error(blob.data, run.weights(k)[-1]))
    assert worst_w <= 1e-4 and worst_g <= 1e-4, (worst_w, worst_g)


@pytest.mark.parametrize("name", ["restore_binary", "restore_hdf5"])
def test_solver_restores_states_caffe_wrote(caffe, tmp_path, name):
    """``solver.restore`` of Caffe's own snapshot at iteration 10, then ``step(10)``: Caffe's
    weights at iteration 20."""
    run = load_run(name)
    solver = caffe.SGDSolver(str(materialise(run, tmp_path, rows=4)))
    if run.solver.type != "SGD":
        solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    solver.restore(str(next((RUNS / name).glob("snap_iter_10.solverstate*"))))
    assert solver.iter == 10
    solver.step(10)
    for k, blob in enumerate(_learnable(solver, run)):
        error = relative_error(blob.data, run.weights(k)[-1])
        assert error <= 1e-4, f"{run.names[k]}: {error:.2e}"


def test_snapshot_then_restore_equals_an_uninterrupted_run(caffe, tmp_path):
    run = load_run("bn_adam")
    path = materialise(run, tmp_path)
    path.write_text(path.read_text() + "snapshot: 3\n")
    straight = caffe.AdamSolver(str(path))
    straight.step(6)
    first = caffe.AdamSolver(str(path))
    first.step(3)  # writes snap_iter_3.caffemodel and .solverstate
    assert (tmp_path / "snap_iter_3.caffemodel").is_file()
    resumed = caffe.AdamSolver(str(path))
    resumed.restore(str(tmp_path / "snap_iter_3.solverstate"))
    resumed.step(3)
    for name, blobs in straight.net.params.items():
        for a, b in zip(blobs, resumed.net.params[name]):
            np.testing.assert_array_equal(a.data, b.data, err_msg=name)


# --- BVLC's python/caffe/test facts -----------------------------------------------------------


def simple_net(num_output: int = 13) -> str:
    """test_net.py's net: DummyData with labels, Convolution, InnerProduct, SoftmaxWithLoss."""
    return f"""name: 'testnet' force_backward: true
    layer {{ type: 'DummyData' name: 'data' top: 'data' top: 'label'
      dummy_data_param {{ num: 5 channels: 2 height: 3 width: 4
        num: 5 channels: 1 height: 1 width: 1
        data_filler {{ type: 'gaussian' std: 1 }}
        data_filler {{ type: 'constant' }} }} }}
    layer {{ type: 'Convolution' name: 'conv' bottom: 'data' top: 'conv'
      convolution_param {{ num_output: 11 kernel_size: 2 pad: 3
        weight_filler {{ type: 'gaussian' std: 1 }}
        bias_filler {{ type: 'constant' value: 2 }} }}
        param {{ decay_mult: 1 }} param {{ decay_mult: 0 }} }}
    layer {{ type: 'InnerProduct' name: 'ip' bottom: 'conv' top: 'ip_blob'
      inner_product_param {{ num_output: {num_output}
        weight_filler {{ type: 'gaussian' std: 2.5 }}
        bias_filler {{ type: 'constant' value: -3 }} }} }}
    layer {{ type: 'SoftmaxWithLoss' name: 'loss' bottom: 'ip_blob' bottom: 'label'
      top: 'loss' }}"""


@pytest.fixture
def train_net(caffe, write_net):
    caffe.set_random_seed(3)
    net = caffe.Net(write_net(simple_net()), caffe.TRAIN)
    net.blobs["label"].data[...] = np.arange(5).reshape(5, 1, 1, 1) * 2
    return net


def test_train_val_net_names_as_caffe(train_net):
    net = train_net
    assert net.inputs == [] and net.outputs == ["loss"]
    assert list(net.blobs) == ["data", "label", "conv", "ip_blob", "loss"]
    assert net.top_names == OrderedDict(
        [("data", ["data", "label"]), ("conv", ["conv"]), ("ip", ["ip_blob"]), ("loss", ["loss"])]
    )
    assert net.bottom_names == OrderedDict(
        [("data", []), ("conv", ["data"]), ("ip", ["conv"]), ("loss", ["ip_blob", "label"])]
    )
    assert list(net.layer_dict) == ["data", "conv", "ip", "loss"]
    assert [layer.type for layer in net.layers] == [
        "DummyData",
        "Convolution",
        "InnerProduct",
        "SoftmaxWithLoss",
    ]
    assert net.blob_loss_weights["loss"] == 1.0 and net.blobs["loss"].diff == 1.0
    assert net.blobs["label"].shape == (5, 1, 1, 1) and net.blobs["loss"].shape == ()


def test_dummy_data_refills_its_random_tops_only(train_net):
    net = train_net
    loss = float(net.forward()["loss"])
    first = net.blobs["data"].data.copy()
    assert 0.5 < first.std() < 1.5  # gaussian std 1, drawn at the forward
    net.forward()
    assert not np.array_equal(first, net.blobs["data"].data)  # drawn again
    np.testing.assert_array_equal(net.blobs["label"].data.ravel(), [0, 2, 4, 6, 8])
    # SoftmaxWithLoss of the current scores: Caffe's -log(max(p, FLT_MIN)) caps each item
    scores = net.blobs["ip_blob"].data.astype(np.float64)
    shifted = scores - scores.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    cap = -np.log(np.finfo(np.float32).tiny)
    expected = np.minimum(-logp[np.arange(5), [0, 2, 4, 6, 8]], cap).mean()
    np.testing.assert_allclose(net.blobs["loss"].data, expected, rtol=1e-5)
    assert np.isfinite(loss)


def test_forward_and_backward_between_layers(train_net):
    """test_net.py's start/end checks: InnerProduct alone, forward and backward, by hand."""
    net = train_net
    rng = np.random.default_rng(0)
    conv = net.blobs["conv"]
    conv.data[...] = rng.uniform(size=conv.data.shape)
    out = net.forward(start="ip", end="ip")
    assert set(out) == {"ip_blob"}
    weight, bias = net.params["ip"][0].data, net.params["ip"][1].data
    manual = conv.data.reshape(5, -1) @ weight.T + bias
    np.testing.assert_allclose(net.blobs["ip_blob"].data, manual, rtol=1e-4, atol=1e-4)
    top = rng.uniform(size=net.blobs["ip_blob"].data.shape).astype(np.float32)
    net.blobs["ip_blob"].diff[...] = top
    diffs = net.backward(start="ip", end="ip")
    assert set(diffs) == {"conv"}
    np.testing.assert_allclose(conv.diff, (top @ weight).reshape(conv.shape), rtol=1e-4, atol=1e-5)
    # the weight diff accumulates top^T x, as Caffe's InnerProduct backward
    np.testing.assert_allclose(
        net.params["ip"][0].diff, top.T @ conv.data.reshape(5, -1), rtol=1e-4, atol=1e-4
    )


def test_backward_before_any_forward_uses_the_blobs(train_net):
    net = train_net
    top = np.ones(net.blobs["ip_blob"].shape, np.float32)
    net.blobs["ip_blob"].diff[...] = top
    net.backward(start="ip", end="ip")
    weight = net.params["ip"][0].data
    np.testing.assert_allclose(
        net.blobs["conv"].diff.reshape(5, -1), top @ weight, rtol=1e-4, atol=1e-5
    )


def test_clear_param_diffs_and_accumulation(train_net):
    net = train_net
    net.forward()
    net.backward()
    diff = net.params["conv"][0].diff
    once = diff.copy()
    assert np.abs(once).max() > 0
    net.backward()  # no forward: the same records, the diff doubles
    np.testing.assert_allclose(diff, 2 * once, rtol=1e-5, atol=1e-6)
    net.clear_param_diffs()
    assert (diff == 0).all()  # the same array, zeroed


def test_backward_returns_input_diffs_and_takes_top_diffs(caffe, write_net):
    """A deploy net with force_backward (saliency, DeepDream): ``backward(**{top: diff})``."""
    path = write_net(
        "force_backward: true\n"
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 4 weight_filler { type: 'gaussian' std: 1 } } }\n"
        'layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }\n'
    )
    net = caffe.Net(path, caffe.TEST)
    x = np.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]], np.float32)
    y = net.forward(data=x)["ip"]
    top = np.arange(8, dtype=np.float32).reshape(2, 4)
    got = net.backward(ip=top)
    weight = net.params["ip"][0].data
    np.testing.assert_allclose(got["data"], (top * (y > 0)) @ weight, rtol=1e-5, atol=1e-6)
    blobs, diffs = net.forward_backward_all(data=np.concatenate([x, x[:1]]), ip=np.ones((3, 4)))
    assert blobs["ip"].shape == (3, 4) and diffs["data"].shape == (3, 3)
    np.testing.assert_allclose(diffs["data"][2], diffs["data"][0], rtol=1e-6)


def test_net_without_loss_or_force_backward_computes_no_diff(caffe, write_net):
    path = write_net(
        'layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 2 } }\n"
    )
    net = caffe.Net(path, caffe.TEST)
    net.forward(data=np.ones((1, 3), np.float32))
    assert (net.backward(ip=np.ones((1, 2)))["data"] == 0).all()  # Caffe: no layer needs it


def test_save_and_read_a_train_net(caffe, train_net, write_net, tmp_path):
    path = write_net(simple_net(), "again.prototxt")
    train_net.save(str(tmp_path / "w.caffemodel"))
    legacy = caffe.Net(path, str(tmp_path / "w.caffemodel"), caffe.TRAIN)
    named = caffe.Net(path, caffe.TRAIN, weights=str(tmp_path / "w.caffemodel"))
    train_net.save_hdf5(str(tmp_path / "w.h5"))
    loaded = caffe.Net(path, caffe.TRAIN)
    loaded.load_hdf5(str(tmp_path / "w.h5"))
    for other in (legacy, named, loaded):
        for name, blobs in train_net.params.items():
            for mine, theirs in zip(blobs, other.params[name]):
                np.testing.assert_array_equal(mine.data, theirs.data)


ALL_IN_ONE = """
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
  include { phase: TRAIN stage: "train" } }
layer { name: "val_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } shape { dim: 1 dim: 1 dim: 1 dim: 1 } }
  include { phase: TEST stage: "val" } }
layer { name: "deploy_data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } include { phase: TEST stage: "deploy" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  include: { phase: TRAIN stage: "train" } include: { phase: TEST stage: "val" } }
layer { name: "pred" type: "Softmax" bottom: "ip" top: "pred" include: { phase: TEST stage: "deploy" } }
"""


@pytest.mark.parametrize(
    ("phase", "stage", "outputs"),
    [("TRAIN", "train", ["loss"]), ("TEST", "val", ["loss"]), ("TEST", "deploy", ["pred"])],
)
def test_all_in_one_net_per_stage(caffe, write_net, phase, stage, outputs):
    net = caffe.Net(write_net(ALL_IN_ONE), getattr(caffe, phase), stages=[stage])
    assert net.blobs["data"].shape == (1, 1, 10, 10) and net.outputs == outputs
    assert net.inputs == (["data"] if stage == "deploy" else [])


def test_net_spec_lenet_and_topless_layers(caffe, tmp_path):
    L, P = caffe.layers, caffe.params
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[4, 1, 28, 28]), dict(dim=[4, 1, 1, 1])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=4, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool1, num_output=10, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.loss = L.SoftmaxWithLoss(n.relu1, n.label)
    (tmp_path / "lenet.prototxt").write_text(str(n.to_proto()))
    net = caffe.Net(str(tmp_path / "lenet.prototxt"), caffe.TEST)
    assert len(net.layers) == 6 and net.outputs == ["loss"]
    s = caffe.NetSpec()
    s.data, s.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    s.silence_data = L.Silence(s.data, ntop=0)
    s.silence_data2 = L.Silence(s.data2, ntop=0)
    (tmp_path / "silent.prototxt").write_text(str(s.to_proto()))
    silent = caffe.Net(str(tmp_path / "silent.prototxt"), caffe.TEST)
    assert silent.forward() == {} and silent.blobs["data"].shape == (3,)


def test_layer_type_list_names_every_registry_type(caffe):
    types = caffe.layer_type_list()
    assert types == sorted(types)
    assert {"Data", "Convolution", "InnerProduct", "SoftmaxWithLoss", "Accuracy"} <= set(types)
    assert {"Silence", "DummyData", "MemoryData", "EuclideanLoss"} <= set(types)
    assert set(registry.described_types()) <= set(types)


def test_nccl_single_process(caffe, tmp_path):
    assert caffe.has_nccl() is False
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes) and uid


SOLVER = """net: '{net}'
test_iter: 2 test_interval: 3 base_lr: 0.01 momentum: 0.9
weight_decay: 0.0005 lr_policy: 'inv' gamma: 0.0001 power: 0.75
display: 0 max_iter: 4 snapshot_after_train: false
snapshot_prefix: "model" """


@pytest.fixture
def sgd(caffe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(simple_net())
    (tmp_path / "solver.prototxt").write_text(SOLVER.format(net=tmp_path / "net.prototxt"))
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    for net in (solver.net, *solver.test_nets):
        net.blobs["label"].data[...] = np.arange(5).reshape(5, 1, 1, 1)
    return solver


def test_solver_surface(caffe, sgd, tmp_path):
    assert isinstance(caffe.get_solver(str(tmp_path / "solver.prototxt")), caffe.SGDSolver)
    assert len(sgd.test_nets) == 1 and sgd.test_nets[0].outputs == ["loss"]
    assert sgd.iter == 0 and sgd.param.base_lr == pytest.approx(0.01) == sgd.lr
    sgd.solve()
    assert sgd.iter == 4
    # the test net holds the train net's blobs (ShareTrainedLayersWith)
    assert sgd.test_nets[0].params["ip"][0] is sgd.net.params["ip"][0]
    sgd.snapshot()
    assert (tmp_path / "model_iter_4.caffemodel").is_file()
    assert (tmp_path / "model_iter_4.solverstate").is_file()


def test_apply_update_reads_diffs_written_from_python(sgd):
    """test_solver.py: weights 0 and diffs 1, one update at lr 0.01: -0.01 everywhere; a
    second update adds momentum 0.9 * 0.01 (Caffe keeps the rate inside the history) and the
    weight decay of the new weights."""
    blob = sgd.net.layers[1].blobs[0]
    blob.data[...] = 0
    blob.diff[...] = 1
    sgd.apply_update()
    np.testing.assert_allclose(blob.data, -0.01, rtol=1e-6)
    assert sgd.iter == 1
    blob.diff[...] = 1
    sgd.apply_update()
    lr = 0.01 * (1 + 0.0001 * 1) ** -0.75  # inv policy at iteration 1
    step = 0.9 * 0.01 + lr * (1 + 0.0005 * -0.01)
    np.testing.assert_allclose(blob.data, -0.01 - step, rtol=1e-5)


def test_memory_data_serves_set_input_arrays(caffe, write_net):
    path = write_net(
        'layer { name: "mem" type: "MemoryData" top: "data" top: "label" '
        "memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }\n"
        'layer { name: "s" type: "Silence" bottom: "data" bottom: "label" }\n'
    )
    net = caffe.Net(path, caffe.TRAIN)
    with pytest.raises(CaffeCompatError, match="set_input_arrays"):
        net.forward()
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    labels = np.array([5, 6, 7, 8], np.float32)
    net.set_input_arrays(data, labels)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(net.blobs["label"].data, [5, 6])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [7, 8])
    net.forward()  # wraps around
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    for bad in (data[:3], data.astype(np.float64), data[:, :, :, :2]):
        with pytest.raises(ValueError):
            net.set_input_arrays(np.ascontiguousarray(bad), labels[: len(bad)])


def test_set_input_arrays_needs_memory_data_first(train_net):
    with pytest.raises(CaffeCompatError, match="first layer is a MemoryDataLayer"):
        train_net.set_input_arrays(np.zeros((5, 2, 3, 4), np.float32), np.zeros(5, np.float32))


def test_solver_working_folder_is_left_alone(sgd, tmp_path):
    assert os.getcwd() == str(tmp_path)
    sgd.step(1)
    assert not list(tmp_path.glob("model_iter_*"))  # snapshot is off


def test_solver_net_forward_from_python_reads_the_next_batch(caffe, tmp_path):
    """As in the LeNet notebook: ``solver.net.forward()`` takes the next batch of the solver's
    own data layer (HDF5Data here, batch 4), and training goes on from there."""
    run = load_run("sgd_fixed")
    solver = caffe.SGDSolver(str(materialise(run, tmp_path)))
    data, label = run.arrays["data"], run.arrays["label"]
    solver.net.forward()
    np.testing.assert_array_equal(solver.net.blobs["data"].data, data[:4])
    np.testing.assert_array_equal(solver.net.blobs["label"].data, label[:4])
    solver.step(1)
    np.testing.assert_array_equal(solver.net.blobs["data"].data, data[4:8])


def test_backward_callbacks_and_refusals(caffe, write_net):
    """before_/after_backward see every layer from the top down (those without a backward too,
    as Caffe's BackwardFromTo); a bottom Caffe refuses to
    backpropagate to (labels with propagate_down: true) is one error line at the backward."""
    net = caffe.Net(write_net(simple_net()), caffe.TRAIN)
    seen: list[tuple[str, int]] = []
    net.before_backward(lambda i: seen.append(("before", i)))
    net.after_backward(lambda i: seen.append(("after", i)))
    net.forward()
    net.backward()
    assert seen == [(k, i) for i in (3, 2, 1, 0) for k in ("before", "after")]
    refused = simple_net().replace(
        "top: 'loss' }", "top: 'loss' propagate_down: true propagate_down: true }"
    )
    bad = caffe.Net(write_net(refused, "refused.prototxt"), caffe.TRAIN)
    bad.forward()
    with pytest.raises(CaffeCompatError, match="label") as caught:
        bad.backward()
    assert "\n" not in str(caught.value) and "loss" in str(caught.value)


def test_levels_select_layers_of_a_dummy_data_net(caffe, write_net):
    """test_net.py's TestLevels: min_level / max_level, with DummyData as the source."""
    text = 'layer { name: "data" type: "DummyData" top: "data" '
    text += "dummy_data_param { shape { dim: 1 dim: 1 dim: 10 dim: 10 } } }\n"
    for name, rule in [
        ("NoLevel", ""),
        ("Level0Only", "include { min_level: 0 max_level: 0 }"),
        ("Level1Only", "include { min_level: 1 max_level: 1 }"),
        ("Level>=0", "include { min_level: 0 }"),
        ("Level>=1", "include { min_level: 1 }"),
    ]:
        text += (
            f'layer {{ name: "{name}" type: "InnerProduct" bottom: "data" top: "{name}" {rule} '
            "inner_product_param { num_output: 1 } }\n"
        )
    path = write_net(text)
    blobs = [b for b in caffe.Net(path, caffe.TEST).blobs if "data" not in b]
    assert blobs == ["NoLevel", "Level0Only", "Level>=0"]
    blobs = [b for b in caffe.Net(path, caffe.TEST, level=1).blobs if "data" not in b]
    assert blobs == ["NoLevel", "Level1Only", "Level>=0", "Level>=1"]


def test_hdf5_data_layer_reads_its_source_batch_after_batch(caffe, tmp_path):
    run = load_run("sgd_fixed")
    materialise(run, tmp_path)
    net = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN)
    assert net.inputs == [] and net.blobs["data"].shape == (4, 3, 6, 6)
    for start in (0, 4):
        net.forward()
        np.testing.assert_array_equal(net.blobs["data"].data, run.arrays["data"][start : start + 4])
        np.testing.assert_array_equal(
            net.blobs["label"].data, run.arrays["label"][start : start + 4]
        )


def test_set_random_seed_repeats_fillers_draws_and_dropout(caffe, write_net):
    text = simple_net().replace(
        "layer { type: 'SoftmaxWithLoss'",
        "layer { type: 'Dropout' name: 'drop' bottom: 'ip_blob' top: 'ip_blob' }\n"
        "    layer { type: 'SoftmaxWithLoss'",
    )
    path = write_net(text)
    runs = []
    for _ in range(2):
        caffe.set_random_seed(11)
        net = caffe.Net(path, caffe.TRAIN)
        net.forward()
        runs.append({name: blob.data.copy() for name, blob in net.blobs.items()})
        runs[-1]["w"] = net.params["conv"][0].data.copy()
    for name, values in runs[0].items():
        np.testing.assert_array_equal(values, runs[1][name], err_msg=name)
    kept = runs[0]["ip_blob"] != 0  # TRAIN Dropout: half dropped, the rest scaled by 2
    assert 0 < kept.mean() < 1


def test_the_device_path_trains_as_the_host_path(caffe, tmp_path, monkeypatch):
    """Where the net runs on a device, modules hold copies of the blobs: the solver's updates
    and BatchNorm's running sums must still travel. Emulated on the CPU (copies instead of
    shared memory), a BatchNorm net's run ends on the host run's weights and statistics."""
    from caffe_compat.pycaffe import _engine

    run = load_run("bn_sgd")
    results = []
    for copies in (False, True):
        folder = tmp_path / str(copies)
        folder.mkdir()
        if copies:
            monkeypatch.setattr(_engine, "on_host", lambda device: False)
        solver = caffe.get_solver(str(materialise(run, folder)))
        solver.step(4)
        results.append({k: [b.data.copy() for b in v] for k, v in solver.net.params.items()})
    for name, blobs in results[0].items():
        for mine, theirs in zip(blobs, results[1][name]):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)


def test_a_huge_dummy_data_is_refused_before_allocating(caffe, write_net):
    """Each top under Caffe's per-blob limit, together 256 GB of float32 (times the copies)."""
    tops = [f"t{i}" for i in range(32)]
    path = write_net(
        'layer { name: "d" type: "DummyData" '
        + " ".join(f'top: "{t}"' for t in tops)
        + " dummy_data_param { shape { dim: 2000000000 } } }\n"
        + 'layer { name: "s" type: "Silence" '
        + " ".join(f'bottom: "{t}"' for t in tops)
        + " }\n"
    )
    with pytest.raises(CaffeCompatError, match="memory budget") as caught:
        caffe.Net(path, caffe.TEST)
    assert "\n" not in str(caught.value) and "net.prototxt" in str(caught.value)


def test_a_memory_data_net_learns_under_a_solver(caffe, tmp_path):
    """MemoryData fed from Python under SGDSolver: two separable classes, the loss falls and
    the trained InnerProduct classifies every item."""
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "mem" type: "MemoryData" top: "data" top: "label" '
        "memory_data_param { batch_size: 8 channels: 2 height: 1 width: 1 } }\n"
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        "inner_product_param { num_output: 2 weight_filler { type: 'gaussian' std: 0.01 } } }\n"
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n'
    )
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.5 lr_policy: "fixed" momentum: 0.5 '
        "max_iter: 40 display: 0 random_seed: 1\n"
    )
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    rng = np.random.default_rng(2)
    labels = np.tile(np.array([0, 1], np.float32), 8)
    data = rng.normal(0, 0.3, (16, 2, 1, 1)).astype(np.float32)
    data[:, 0, 0, 0] += np.where(labels == 1, 1.0, -1.0)
    solver.net.set_input_arrays(data, labels)
    solver.step(1)
    first = float(solver.net.blobs["loss"].data)
    solver.solve()
    assert solver.iter == 40 and float(solver.net.blobs["loss"].data) < 0.2 * first
    weight, bias = solver.net.params["ip"][0].data, solver.net.params["ip"][1].data
    scores = data.reshape(16, 2) @ weight.T + bias
    np.testing.assert_array_equal(scores.argmax(axis=1), labels)
