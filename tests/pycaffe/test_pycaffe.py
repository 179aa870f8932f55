"""caffe.Net: Caffe's names and orders, forward(start/end/blobs), forward_all, reshape, edits.

Expected names and orders are written out from Caffe's rules (Net::Init, InsertSplits); expected
values come from ``caffe_compat.to_torch`` run on the whole net (the converters are tested against
real Caffe and OpenCV elsewhere; here the point is pycaffe's bookkeeping around them) or from numpy.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import caffe_compat
from caffe_compat.errors import CaffeCompatError

# conv1 -> in-place ReLU feeding two pools (a Split after relu1), an in-place BatchNorm + Scale
# chain whose result feeds two heads (a second Split), two outputs.
BRANCHY = """
name: "branchy"
input: "data"
input_shape { dim: 2 dim: 3 dim: 8 dim: 8 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool_a" type: "Pooling" bottom: "conv1" top: "pool_a" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "pool_b" type: "Pooling" bottom: "conv1" top: "pool_b" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "pool_a" bottom: "pool_b" top: "sum" }
layer { name: "bn" type: "BatchNorm" bottom: "sum" top: "sum" }
layer { name: "scale" type: "Scale" bottom: "sum" top: "sum" scale_param { bias_term: true } }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
layer { name: "aux" type: "InnerProduct" bottom: "sum" top: "aux"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.5 } } }
"""

LAYERS = [
    "input", "conv1", "relu1", "conv1_relu1_0_split", "pool_a", "pool_b", "sum", "bn", "scale",
    "sum_scale_0_split", "fc", "prob", "aux",
]  # fmt: skip
BLOBS = [
    "data", "conv1", "conv1_relu1_0_split_0", "conv1_relu1_0_split_1", "pool_a", "pool_b", "sum",
    "sum_scale_0_split_0", "sum_scale_0_split_1", "fc", "prob", "aux",
]  # fmt: skip
SHAPES = {
    "data": (2, 3, 8, 8), "conv1": (2, 4, 8, 8), "conv1_relu1_0_split_0": (2, 4, 8, 8),
    "conv1_relu1_0_split_1": (2, 4, 8, 8), "pool_a": (2, 4, 4, 4), "pool_b": (2, 4, 4, 4),
    "sum": (2, 4, 4, 4), "sum_scale_0_split_0": (2, 4, 4, 4), "sum_scale_0_split_1": (2, 4, 4, 4),
    "fc": (2, 5), "prob": (2, 5), "aux": (2, 2),
}  # fmt: skip


@pytest.fixture
def branchy(caffe, write_net):
    """The net (weights from its fillers, BatchNorm statistics set) and its prototxt path."""
    caffe.set_random_seed(7)
    path = write_net(BRANCHY)
    net = caffe.Net(path, caffe.TEST)
    mean, var, factor = net.params["bn"]
    mean.data[...] = [0.1, -0.2, 0.3, 0.0]
    var.data[...] = [1.5, 0.5, 2.0, 1.0]
    factor.data[...] = 2.0
    net.params["scale"][0].data[...] = [1.0, 0.5, 2.0, -1.0]
    net.params["scale"][1].data[...] = [0.0, 0.1, -0.1, 0.2]
    return net, path


def _reference(net, path: str, data: np.ndarray, outputs: list[str]) -> dict[str, np.ndarray]:
    """The whole net through caffe_compat.to_torch with the same weights (saved and re-read)."""
    weights = path + ".caffemodel"
    net.save(weights)
    loaded = caffe_compat.load_net(path, weights, input_shapes={"data": data.shape})
    model = caffe_compat.to_torch(loaded.graph)
    with torch.no_grad():
        out = model(torch.from_numpy(data), outputs=outputs)
    return {k: v.numpy() for k, v in out.items()}


def _data(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32)


def test_names_and_orders_follow_caffe(branchy):
    net, _ = branchy
    assert net._layer_names == LAYERS
    assert list(net.blobs) == BLOBS
    assert {name: blob.shape for name, blob in net.blobs.items()} == SHAPES
    assert list(net.params) == ["conv1", "bn", "scale", "fc", "aux"]
    assert [len(v) for v in net.params.values()] == [2, 3, 2, 2, 2]
    assert net.params["fc"][0].shape == (5, 64) and net.params["aux"][1].shape == (2,)
    assert net.inputs == ["data"]
    assert net.outputs == ["aux", "prob"]  # sorted by name, as Caffe's std::set
    assert [layer.type for layer in net.layers][:4] == ["Input", "Convolution", "ReLU", "Split"]
    assert net.top_names["relu1"] == ["conv1"] and net.bottom_names["relu1"] == ["conv1"]
    assert net.bottom_names["pool_b"] == ["conv1_relu1_0_split_1"]
    assert net.top_names["sum_scale_0_split"] == ["sum_scale_0_split_0", "sum_scale_0_split_1"]
    assert net.bottom_names["aux"] == ["sum_scale_0_split_1"]
    assert net._inputs == [0] and net._outputs == [11, 10]
    assert list(net.layer_dict) == LAYERS and net.layer_dict["bn"] is net.layers[7]
    assert net.blobs is net.blobs and net.params["fc"] is net.layers[10].blobs
    blob = net.blobs["fc"]
    assert (blob.num, blob.channels, blob.height, blob.width, blob.count) == (2, 5, 1, 1, 10)


def test_fillers_as_caffe(branchy):
    net, _ = branchy
    np.testing.assert_array_equal(net.params["conv1"][1].data, np.float32(0.1))  # constant filler
    np.testing.assert_array_equal(net.params["fc"][1].data, 0.0)  # default: constant 0
    np.testing.assert_array_equal(net.params["aux"][1].data, 0.5)
    assert 0.2 < net.params["conv1"][0].data.std() < 0.4  # gaussian std 0.3
    limit = np.sqrt(3.0 / 64)  # xavier: uniform(-sqrt(3 / fan_in), +)
    assert np.abs(net.params["aux"][0].data).max() <= limit


def test_forward_fills_every_blob(branchy):
    net, path = branchy
    x = _data((2, 3, 8, 8))
    net.blobs["data"].data[...] = x
    out = net.forward()
    assert set(out) == {"aux", "prob"}
    ref = _reference(net, path, x, ["conv1", "pool_a", "pool_b", "sum", "fc", "prob", "aux"])
    for name in ("conv1", "pool_a", "pool_b", "sum", "fc", "prob", "aux"):
        np.testing.assert_allclose(net.blobs[name].data, ref[name], rtol=1e-5, atol=1e-6)
    # In-place layers: conv1 holds the ReLU's output, sum the Scale's; splits alias their source.
    assert net.blobs["conv1"].data.min() >= 0
    np.testing.assert_array_equal(net.blobs["conv1_relu1_0_split_1"].data, net.blobs["conv1"].data)
    np.testing.assert_array_equal(net.blobs["sum_scale_0_split_0"].data, net.blobs["sum"].data)
    # forward returns views of the blobs, as pycaffe does.
    assert np.shares_memory(out["prob"], net.blobs["prob"].data)
    assert out["prob"].dtype == np.float32


def test_forward_kwargs_start_end_blobs(branchy):
    net, _ = branchy
    x = _data((2, 3, 8, 8), seed=1)
    full = {k: v.copy() for k, v in net.forward(blobs=["pool_a"], data=x).items()}
    assert set(full) == {"aux", "prob", "pool_a"}

    for blob in net.blobs.values():
        blob.data[...] = 0
    net.blobs["data"].data[...] = x
    part = net.forward(end="pool_b")
    assert set(part) == {"pool_b"}
    assert np.all(net.blobs["sum"].data == 0) and np.all(net.blobs["prob"].data == 0)
    np.testing.assert_allclose(net.blobs["pool_a"].data, full["pool_a"], rtol=1e-6)

    rest = net.forward(start="sum", blobs=["fc"])
    assert set(rest) == {"aux", "prob", "fc"}
    np.testing.assert_allclose(rest["prob"], full["prob"], rtol=1e-5, atol=1e-7)

    # start reads the blobs as they are: change pool_b and only the later layers see it.
    net.blobs["pool_b"].data[...] += 1.0
    shifted = net.forward(start="sum")["aux"].copy()
    assert np.abs(shifted - full["aux"]).max() > 1e-3
    np.testing.assert_allclose(net.blobs["pool_a"].data, full["pool_a"], rtol=1e-6)


def test_forward_errors_match_pycaffe(branchy):
    net, _ = branchy
    with pytest.raises(Exception, match=r"^Input blob arguments do not match net inputs.$"):
        net.forward(image=np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(Exception, match=r"^Input is not batch sized$"):
        net.forward(data=np.zeros((3, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="is not in list"):
        net.forward(start="nope")
    with pytest.raises(KeyError):
        net.forward(blobs=["nope"])
    with pytest.raises(AttributeError):
        net.blobs["data"].data = np.zeros((2, 3, 8, 8))  # a read-only property in pycaffe
    with pytest.raises(RuntimeError, match=r"^Blob.reshape takes no kwargs$"):
        net.blobs["data"].reshape(1, 3, 8, width=8)


def test_forward_all_batches_and_drops_padding(branchy):
    net, path = branchy
    x = _data((5, 3, 8, 8), seed=2)  # batch size 2: batches 2, 2, then 1 padded with zeros
    out = net.forward_all(data=x, blobs=["sum"])
    assert set(out) == {"aux", "prob", "sum"}
    assert out["prob"].shape == (5, 5) and out["sum"].shape == (5, 4, 4, 4)
    ref = _reference(net, path, x, ["prob", "aux", "sum"])
    for name in ("prob", "aux", "sum"):
        np.testing.assert_allclose(out[name], ref[name], rtol=1e-5, atol=1e-6)
    # The last batch ran with a zero-padded second row, still in the blobs.
    np.testing.assert_array_equal(net.blobs["data"].data[1], 0)
    np.testing.assert_array_equal(net.blobs["data"].data[0], x[4])


def test_reshape_reinfers_shapes(branchy):
    net, path = branchy
    net.blobs["data"].reshape(3, 3, 8, 8)
    net.reshape()
    assert net.blobs["sum_scale_0_split_1"].shape == (3, 4, 4, 4)
    assert net.blobs["prob"].shape == (3, 5)
    x = _data((3, 3, 8, 8), seed=3)
    net.blobs["data"].data[...] = x
    net.forward()
    ref = _reference(net, path, x, ["prob"])
    np.testing.assert_allclose(net.blobs["prob"].data, ref["prob"], rtol=1e-5, atol=1e-7)

    # A spatial size the InnerProduct weights cannot take: one clear error, shapes kept.
    net.blobs["data"].reshape(3, 3, 12, 12)
    with pytest.raises(CaffeCompatError, match=r'layer "fc".*parameter shapes'):
        net.reshape()
    assert net.blobs["prob"].shape == (3, 5)


def test_forward_reshapes_by_itself(caffe, write_net):
    """Caffe's layers reshape at every Forward: no net.reshape() needed after blob.reshape()."""
    path = write_net(
        'input: "data" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool" '
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n"
    )
    net = caffe.Net(path, caffe.TEST)
    net.blobs["data"].reshape(2, 1, 9, 9)
    net.blobs["data"].data[...] = np.arange(162, dtype=np.float32).reshape(2, 1, 9, 9)
    out = net.forward()["pool"]
    assert out.shape == (2, 1, 4, 4)  # ceil((9 - 3) / 2) + 1
    assert out[1, 0, 3, 3] == 81 + 80  # the last window's maximum, the bottom-right pixel


def test_repeated_layer_names_each_run_their_own_layer(caffe, write_net):
    """HED's five "crop" layers: Caffe lists the name five times, and each crops its own
    bottom (hand-computed: offset 1 on H and W)."""
    path = write_net(
        'input: "data" input_shape { dim: 1 dim: 1 dim: 4 dim: 4 }\n'
        'input: "big" input_shape { dim: 1 dim: 1 dim: 6 dim: 6 }\n'
        'layer { name: "crop" type: "Crop" bottom: "big" bottom: "data" top: "a" '
        "crop_param { axis: 2 offset: 1 } }\n"
        'layer { name: "twice" type: "Power" bottom: "big" top: "b" power_param { scale: 2 } }\n'
        'layer { name: "crop" type: "Crop" bottom: "b" bottom: "data" top: "c" '
        "crop_param { axis: 2 offset: 1 } }\n"
    )
    net = caffe.Net(path, caffe.TEST)
    assert [n for n in net._layer_names if n in ("crop", "twice")] == ["crop", "twice", "crop"]
    big = np.arange(36, dtype=np.float32).reshape(1, 1, 6, 6)
    net.blobs["big"].data[...] = big
    out = net.forward()
    np.testing.assert_array_equal(out["a"], big[:, :, 1:5, 1:5])
    np.testing.assert_array_equal(out["c"], 2 * big[:, :, 1:5, 1:5])


def test_params_edits_reach_the_next_forward(branchy):
    net, path = branchy
    x = _data((2, 3, 8, 8), seed=4)
    net.blobs["data"].data[...] = x
    before = net.forward()["aux"].copy()

    held = net.params["aux"][0].data  # a held view, written after the next forward too
    held[...] *= -1.0
    flipped = net.forward()["aux"].copy()
    bias = net.params["aux"][1].data
    np.testing.assert_allclose(flipped - bias, -(before - bias), rtol=1e-5, atol=1e-5)
    held[...] *= -1.0
    np.testing.assert_allclose(net.forward()["aux"], before, rtol=1e-6, atol=1e-6)

    # BatchNorm's module keeps statistics derived from its blobs: edits are still seen.
    net.params["bn"][2].data[...] = 4.0  # the scale factor: mean and variance halve
    changed = net.forward()["aux"].copy()
    ref = _reference(net, path, x, ["aux"])
    np.testing.assert_allclose(changed, ref["aux"], rtol=1e-5, atol=1e-6)
    assert np.abs(changed - before).max() > 1e-3


def test_copy_from_and_share_with(branchy, caffe):
    net, path = branchy
    x = _data((2, 3, 8, 8), seed=5)
    expected = net.forward(data=x)["prob"].copy()
    weights = path + ".saved.caffemodel"
    net.save(weights)

    caffe.set_random_seed(99)
    other = caffe.Net(path, caffe.TEST)
    assert not np.array_equal(other.forward(data=x)["prob"], expected)
    other.copy_from(weights)
    np.testing.assert_allclose(other.forward(data=x)["prob"], expected, rtol=1e-6, atol=1e-7)

    third = caffe.Net(path, caffe.TEST)
    third.share_with(net)
    np.testing.assert_allclose(third.forward(data=x)["prob"], expected, rtol=1e-6, atol=1e-7)
    net.params["fc"][1].data[...] += 1.0  # shared memory: third sees it
    assert np.shares_memory(third.params["fc"][1].data, net.params["fc"][1].data)


def test_copy_from_shape_mismatch_is_caffes_message(caffe, write_net, branchy):
    net, path = branchy
    weights = path + ".w.caffemodel"
    net.save(weights)
    narrow = write_net(BRANCHY.replace("num_output: 5", "num_output: 6"), "narrow.prototxt")
    with pytest.raises(
        CaffeCompatError,
        match=r"Cannot copy param 0 weights from layer 'fc'; shape mismatch\. Source param "
        r"shape is 5 64 \(320\); target param shape is 6 64 \(384\)\. To learn",
    ):
        caffe.Net(narrow, caffe.TEST, weights=weights)


def test_constructor_forms(caffe, branchy, tmp_path, caplog):
    net, path = branchy
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    x = _data((2, 3, 8, 8), seed=6)
    expected = net.forward(data=x)["prob"].copy()
    for made in (
        caffe.Net(path, caffe.TEST, weights=weights),
        caffe.Net(path, weights=weights, phase=caffe.TEST),
        caffe.Net(network_file=path, phase=caffe.TEST, weights=weights, level=0, stages=[]),
        caffe.Net(path, weights, caffe.TEST),  # deprecated form: logs a warning
    ):
        np.testing.assert_allclose(made.forward(data=x)["prob"], expected, rtol=1e-6)
    assert "DEPRECATION WARNING" in caplog.text
    with pytest.raises(TypeError, match="did not match any signature"):
        caffe.Net(path, weights)
    with pytest.raises(RuntimeError, match=r"^Could not open file /no/such.prototxt$"):
        caffe.Net("/no/such.prototxt", caffe.TEST)
    with pytest.raises(RuntimeError, match=r"^Could not open file /no/such.caffemodel$"):
        caffe.Net(path, caffe.TEST, weights="/no/such.caffemodel")
    assert (caffe.TRAIN, caffe.TEST) == (0, 1)


def test_phase_and_stages_select_layers(caffe, write_net):
    path = write_net(
        'input: "data" input_shape { dim: 1 dim: 2 }\n'
        'layer { name: "a" type: "Power" bottom: "data" top: "y" power_param { scale: 2 } '
        "include { phase: TEST } }\n"
        'layer { name: "b" type: "Power" bottom: "data" top: "y" power_param { scale: 3 } '
        "include { phase: TRAIN } }\n"
        'layer { name: "c" type: "Power" bottom: "y" top: "y" power_param { shift: 1 } '
        'include { stage: "plus" } }\n'
    )
    x = np.array([[1.0, 2.0]], np.float32)
    assert caffe.Net(path, caffe.TEST)._layer_names == ["input", "a"]
    np.testing.assert_array_equal(caffe.Net(path, caffe.TEST).forward(data=x)["y"], [[2, 4]])
    np.testing.assert_array_equal(caffe.Net(path, caffe.TRAIN).forward(data=x)["y"], [[3, 6]])
    staged = caffe.Net(path, caffe.TEST, stages=["plus"])
    np.testing.assert_array_equal(staged.forward(data=x)["y"], [[3, 5]])


def test_gpu_mode_without_cuda_warns_once_and_runs(caffe, branchy, monkeypatch):
    from caffe_compat.pycaffe import _caffe

    if torch.cuda.is_available():
        pytest.skip("CUDA is present: this checks the CPU-only behaviour")
    monkeypatch.setitem(_caffe._mode, "warned", False)
    net, _ = branchy
    x = _data((2, 3, 8, 8), seed=8)
    expected = net.forward(data=x)["prob"].copy()
    with pytest.warns(RuntimeWarning, match="CUDA is not available"):
        caffe.set_mode_gpu()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once only
        caffe.set_device(0)
        np.testing.assert_array_equal(net.forward(data=x)["prob"], expected)


def test_module_surface(caffe):
    assert caffe.__version__ == "1.0.0"
    types = caffe.layer_type_list()
    assert types == sorted(types) and {"Convolution", "Input", "LRN", "Split"} <= set(types)
    assert caffe.proto.caffe_pb2.NetParameter is caffe_compat.proto.caffe_pb2.NetParameter
    import caffe_compat.pycaffe.proto.caffe_pb2 as pb2

    assert pb2 is caffe_compat.proto.caffe_pb2


def test_timer_reports_the_last_interval_in_milliseconds(caffe, monkeypatch):
    """Caffe's Timer: MilliSeconds is the last Start-Stop interval; read while running, it stops."""
    from caffe_compat.pycaffe import _caffe

    clock = iter([10.0, 10.25, 20.0, 20.5])
    monkeypatch.setattr(_caffe.time, "perf_counter", lambda: next(clock))
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms == pytest.approx(250.0)
    timer.start()
    assert timer.ms == pytest.approx(500.0)  # stopped by the read
    assert timer.ms == pytest.approx(500.0)


def test_device_mode_semantics_on_the_cpu(branchy, monkeypatch):
    """The GPU-mode bookkeeping (results kept on the device until read, weights copied to it and
    edits found by snapshots), exercised on the CPU by treating it as a device."""
    from caffe_compat.pycaffe import _engine

    net, path = branchy
    monkeypatch.setattr(_engine, "on_host", lambda device: False)
    x = _data((2, 3, 8, 8), seed=9)
    net.blobs["data"].data[...] = x
    net.forward()
    assert net.blobs["fc"]._pending is not None  # not copied back yet
    ref = _reference(net, path, x, ["fc", "aux"])
    np.testing.assert_allclose(net.blobs["fc"].data, ref["fc"], rtol=1e-5, atol=1e-6)
    assert net.blobs["fc"]._pending is None  # reading .data synchronised it

    weight = net.params["aux"][0].data
    weight[...] *= 2.0  # not shared with the module here: found by the snapshot
    net.forward()
    bias = net.params["aux"][1].data
    np.testing.assert_allclose(
        net.blobs["aux"].data - bias, 2.0 * (ref["aux"] - bias), rtol=1e-5, atol=1e-5
    )
    # start= reads each blob where its newest values are: pool_a on the device, pool_b as
    # just written on the host.
    net.blobs["pool_b"].data[...] = 0.0
    out = net.forward(start="sum")["aux"].copy()
    net.forward()
    assert np.abs(out - net.blobs["aux"].data).max() > 1e-4


SIAMESE = """
input: "a" input_shape { dim: 2 dim: 3 }
input: "b" input_shape { dim: 2 dim: 3 }
layer { name: "ip_a" type: "InnerProduct" bottom: "a" top: "fa"
  param { name: "w" } param { name: "bias" }
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } bias_filler { type: "constant" value: 0.5 } } }
layer { name: "ip_b" type: "InnerProduct" bottom: "b" top: "fb"
  param { name: "w" } param { name: "bias" }
  inner_product_param { num_output: 4 weight_filler { type: "constant" value: 9 } } }
layer { name: "flat" type: "InnerProduct" bottom: "a" top: "fc"
  param { name: "w2" } param { name: "w" share_mode: PERMISSIVE }
  inner_product_param { num_output: 12 bias_term: true } }
"""


def test_named_params_are_shared(caffe, write_net):
    """Caffe's ParamSpec names: later layers use the first layer's blobs (the owner's values)."""
    net = caffe.Net(write_net(SIAMESE), caffe.TEST)
    assert net.params["ip_b"][0] is net.params["ip_a"][0]
    np.testing.assert_array_equal(net.params["ip_b"][1].data, np.float32(0.5))
    assert not np.all(net.params["ip_a"][0].data == 9)  # the owner's gaussian, not the constant
    # PERMISSIVE: the 12-vector bias of "flat" views the 4x3 weights of "ip_a".
    assert net.params["flat"][1].shape == (12,)
    assert np.shares_memory(net.params["flat"][1].data, net.params["ip_a"][0].data)
    x = np.random.default_rng(0).normal(0, 1, (2, 3)).astype(np.float32)
    out = net.forward(a=x, b=x)
    np.testing.assert_array_equal(out["fa"], out["fb"])
    net.params["ip_a"][0].data[...] = 1.0  # seen by both users of "w"
    out = net.forward(a=x, b=x)
    np.testing.assert_allclose(out["fb"], x.sum(axis=1, keepdims=True) + 0.5 + np.zeros((2, 4)))
    w2 = net.params["flat"][0].data.astype(np.float64)
    np.testing.assert_allclose(out["fc"], x @ w2.T + 1.0, rtol=1e-5, atol=1e-5)  # bias: all 1


def test_bayesian_segnet_monte_carlo_dropout_samples_on_every_forward(caffe, tmp_path):
    """caffe-segnet's pycaffe loop (test_bayesian_segnet.py) runs forward on a batch of copies
    of one image and reads the per-pixel mean and variance: every forward and every item must
    draw its own mask (kept values times 1 / (1 - ratio)), as its DropoutLayer does at TEST."""
    path = tmp_path / "mc.prototxt"
    path.write_text(
        'input: "data" input_shape { dim: 4 dim: 2 dim: 6 dim: 6 }\n'
        'layer { name: "d" type: "Dropout" bottom: "data" top: "y" '
        "dropout_param { dropout_ratio: 0.5 sample_weights_test: true } }\n"
    )
    net = caffe.Net(str(path), caffe.TEST)
    net.blobs["data"].data[...] = 1.0
    first, second = net.forward()["y"].copy(), net.forward()["y"].copy()
    assert set(np.unique(first)) <= {0.0, 2.0} and set(np.unique(second)) <= {0.0, 2.0}
    assert not np.array_equal(first, second) and not np.array_equal(first[0], first[1])


def test_a_fork_prior_box_is_settled_as_in_load_net(caffe, write_net):
    """caffe.Net settles the PriorBox fork from the heads' box count as load_net does: a
    TextBoxes net (each prior twice) builds, its priors twice BVLC's count."""
    prototxt = (
        'layer { name: "in" type: "Input" top: "map" top: "data" top: "loc" top: "conf" '
        "input_param { shape { dim: 1 dim: 1 dim: 2 dim: 2 } shape { dim: 1 dim: 3 dim: 64 "
        "dim: 64 } shape { dim: 1 dim: 64 } shape { dim: 1 dim: 32 } } }\n"
        'layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" '
        "prior_box_param { min_size: 8 aspect_ratio: 2 flip: false } }\n"
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "pb" '
        'top: "det" detection_output_param { num_classes: 2 background_label_id: 0 '
        "nms_param { nms_threshold: 0.45 } } }\n"
    )
    net = caffe.Net(write_net(prototxt), caffe.TEST)
    assert net.blobs["pb"].data.shape == (1, 2, 2 * 2 * 4 * 4)
