"""``type: "Python"`` layers: the user's ``caffe.Layer`` subclass (written here into a module on
sys.path, ``import caffe`` inside it) runs in PyTorch and the float64 reference, against its
formula in numpy; ONNX export refuses it in one line naming the layer and class; an unimportable
module is one line at load time. py-faster-rcnn's proposal layer: tests/converters/test_proposal.py."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from caffe_compat.converters.onnx.export import to_onnx
from caffe_compat.errors import CaffeCompatError, UnsupportedLayersError
from caffe_compat.ir.load import load_net
from caffe_compat.reference import forward
from caffe_compat.verify.backends import run_torch

LAYERS = '''
import caffe
import numpy as np


class ScaledSquare(caffe.Layer):
    """top = k * x^2 and the sum of each item; k from param_str."""

    def setup(self, bottom, top):
        if len(bottom) != 1:
            raise Exception("one bottom")
        self.k = float(self.param_str or 1)
        self.setup_phase = self.phase

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        top[0].data[...] = self.k * bottom[0].data ** 2
        top[1].data[...] = top[0].data.reshape(bottom[0].num, -1).sum(1, keepdims=True)

    def backward(self, top, propagate_down, bottom):
        sums = top[1].diff.reshape(-1, *([1] * (bottom[0].data.ndim - 1)))
        bottom[0].diff[...] = 2 * self.k * bottom[0].data * (top[0].diff + sums)


class Phase(caffe.Layer):
    """Both tops hold the phase the layer was given (BVLC's test_python_layer.py PhaseLayer)."""

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        top[0].data[...] = self.phase
        top[1].data[...] = self.phase


class Broken(caffe.Layer):
    def setup(self, bottom, top):
        raise RuntimeError("no good")


class UsersError(Exception):
    pass


class FailsInForward(caffe.Layer):
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        raise UsersError("bad batch")


class Tally(caffe.Layer):
    """Its blob counts the forwards (a layer updating its own blobs, as running statistics do)."""

    def setup(self, bottom, top):
        self.blobs.add_blob(1)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        self.blobs[0].data[...] += 1
        top[0].data[...] = bottom[0].data * self.blobs[0].data


CALLS = []


class Counted(caffe.Layer):
    """Records the calls Caffe makes; a blob from setup, and a method of its own."""

    def setup(self, bottom, top):
        CALLS.append("setup")
        self.blobs.add_blob(2, 3)
        self.blobs[0].data[...] = 5

    def reshape(self, bottom, top):
        CALLS.append("reshape")
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        CALLS.append("forward")
        top[0].data[...] = bottom[0].data + self.blobs[0].data.sum()

    def backward(self, top, propagate_down, bottom):
        CALLS.append(f"backward {list(propagate_down)}")
        bottom[0].diff[...] = top[0].diff

    def hello(self):
        return "hi"


class Affine(caffe.Layer):
    """sq = w * x + b per channel (axis 1), w and b its own blobs (setup: w = 2, b = 0);
    total = the count of forwards so far."""

    def setup(self, bottom, top):
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs.add_blob(bottom[0].data.shape[1])
        self.blobs[0].data[...] = 2
        self.calls = 0

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
        top[1].reshape(bottom[0].num, 1)

    def forward(self, bottom, top):
        shape = (1, -1) + (1,) * (bottom[0].data.ndim - 2)
        w, b = (blob.data.reshape(shape) for blob in self.blobs)
        top[0].data[...] = w * bottom[0].data + b
        self.calls += 1
        top[1].data[...] = self.calls

    def backward(self, top, propagate_down, bottom):
        axes = (0,) + tuple(range(2, bottom[0].data.ndim))
        g = top[0].diff
        self.blobs[0].diff[...] += (g * bottom[0].data).sum(axes)
        self.blobs[1].diff[...] += g.sum(axes)
        if propagate_down[0]:
            shape = (1, -1) + (1,) * (bottom[0].data.ndim - 2)
            bottom[0].diff[...] = g * self.blobs[0].data.reshape(shape)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    name = f"user_layers_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def python_net(tmp_path, module: str, cls: str = "ScaledSquare", param: str = "3") -> str:
    path = tmp_path / "net.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 '
        "dim: 4 dim: 5 } } }\n"
        f'layer {{ name: "sq" type: "Python" bottom: "data" top: "sq" top: "total" python_param '
        f'{{ module: "{module}" layer: "{cls}" param_str: "{param}" }} }}\n'
        'layer { name: "relu" type: "ReLU" bottom: "sq" top: "out" }\n'
    )
    return path


def test_user_layer_runs_in_torch_and_the_reference(tmp_path, user_module):
    loaded = load_net(python_net(tmp_path, user_module))
    assert loaded.graph.shapes["sq"] == (2, 3, 4, 5)
    assert loaded.graph.shapes["total"] == (2, 1)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = 3 * x.astype(np.float64) ** 2
    total = want.reshape(2, -1).sum(1, keepdims=True)
    ours = run_torch(loaded.graph, {"data": x}, ["sq", "total", "out"])
    ref = forward(loaded, {"data": x}, outputs=["sq", "total"])
    np.testing.assert_allclose(ours["sq"], want, rtol=1e-6)
    np.testing.assert_allclose(ours["total"], total, rtol=1e-5)
    np.testing.assert_allclose(ref["sq"], want, rtol=1e-12)
    np.testing.assert_allclose(ref["total"], total, rtol=1e-12)
    assert "caffe" not in sys.modules  # `import caffe` resolved only while the module loaded


def test_user_layer_is_refused_by_onnx_in_one_line(tmp_path, user_module):
    loaded = load_net(python_net(tmp_path, user_module))
    with pytest.raises(UnsupportedLayersError) as info:
        to_onnx(loaded.graph)
    message = str(info.value)
    assert f"{user_module}.ScaledSquare" in message and "sq" in message and "\n" not in message


def test_torch_gradient_is_the_users_backward(tmp_path, user_module):
    import torch

    from caffe_compat.converters.torch.model import CaffeNet

    loaded = load_net(python_net(tmp_path, user_module))
    model = CaffeNet(loaded.graph)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float32, requires_grad=True)
    out = model(x, outputs=["sq", "total"])
    sq, total = out["sq"], out["total"]
    (sq.sum() + 2 * total.sum()).backward()
    want = 2 * 3 * x.detach() * (1 + 2)
    torch.testing.assert_close(x.grad, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "module, cls, message",
    [
        ("no_such_module_anywhere", "X", "cannot be imported"),
        (None, "Missing", "has no class 'Missing'"),
        (None, "Broken", "Broken.setup raised RuntimeError: no good"),
    ],
)
def test_bad_python_layers_fail_in_one_line(tmp_path, user_module, module, cls, message):
    with pytest.raises(CaffeCompatError, match=message) as info:
        load_net(python_net(tmp_path, module or user_module, cls))
    assert 'layer "sq"' in str(info.value) and "\n" not in str(info.value)


def test_pycaffe_net_runs_the_users_layer(tmp_path, user_module):
    """``caffe.Net`` of the pycaffe shim (``import caffe`` in the user's module is the shim)."""
    import caffe_compat.pycaffe as caffe

    net = caffe.Net(str(python_net(tmp_path, user_module)), caffe.TEST)
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.forward()
    np.testing.assert_allclose(net.blobs["sq"].data, 3 * x.astype(np.float64) ** 2, rtol=1e-6)
    assert [layer.type for layer in net.layers] == ["Input", "Python", "ReLU"]


def test_the_layer_sees_its_nets_phase(tmp_path, user_module):
    """Caffe's Net::Init gives every layer the net's phase: a Python layer's ``self.phase`` is
    TRAIN in a TRAIN net (BVLC's test_python_layer.py test_phase)."""
    import caffe_compat.pycaffe as caffe

    for phase in (caffe.TRAIN, caffe.TEST):
        net = caffe.Net(str(python_net(tmp_path, user_module, "Phase")), phase)
        out = net.forward()
        assert np.all(net.blobs["sq"].data == phase) and np.all(out["out"] == phase), phase


def test_torch_parameters_are_the_layers_own_blobs(tmp_path, user_module):
    """setup's ``self.blobs.add_blob`` gives the module parameters (setup's values when the net
    has no weights, the net's otherwise) whose gradient is what the user's backward writes."""
    import torch

    from caffe_compat.converters.torch.model import CaffeNet

    loaded = load_net(python_net(tmp_path, user_module, "Affine"))
    model = CaffeNet(loaded.graph)
    params = dict(model.named_parameters())
    assert len(params) == 2
    w, b = (p for _, p in sorted(params.items()))
    assert torch.equal(w, torch.full((3,), 2.0)) and torch.equal(b, torch.zeros(3))
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        b.copy_(torch.tensor([1.0, -1.0, 0.5]))
    out = model(x, outputs=["sq"])["sq"]
    want = 2 * x + torch.tensor([1.0, -1.0, 0.5]).reshape(1, 3, 1, 1)
    torch.testing.assert_close(out, want)
    (out * x).sum().backward()  # d/dw = sum x^2, d/db = sum x per channel
    torch.testing.assert_close(w.grad, (x * x).sum((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.grad, x.sum((0, 2, 3)), rtol=1e-5, atol=1e-5)

    loaded.graph.node("sq").blobs = [np.array([3.0, 3, 3], "f4"), np.zeros(3, "f4")]
    again = CaffeNet(loaded.graph)(x, outputs=["sq"])["sq"]
    torch.testing.assert_close(again, 3 * x)


def test_pycaffe_keeps_saves_loads_and_shares_the_layers_blobs(tmp_path, user_module):
    """BVLC's test_parameter, with values: net.params holds setup's blobs (not filled), the
    layer object is the user's, backward adds the user's diffs, save/copy_from round-trip,
    share_with hands the blobs to another net's instance."""
    import caffe_compat.pycaffe as caffe

    path = python_net(tmp_path, user_module, "Affine")
    path.write_text("force_backward: true\n" + path.read_text())
    path = str(path)
    net = caffe.Net(path, caffe.TRAIN)
    layer = net.layers[list(net._layer_names).index("sq")]
    assert type(layer).__name__ == "Affine" and layer.calls == 0
    assert list(net.params) == ["sq"] and net.params["sq"] is layer.blobs
    np.testing.assert_array_equal(layer.blobs[0].data, [2, 2, 2])
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    net.blobs["data"].data[...] = x
    net.params["sq"][1].data[...] = [1, 2, 3]  # an edit reaches the next forward
    net.forward()
    bias = np.array([1, 2, 3], np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(net.blobs["sq"].data, 2 * x + bias, rtol=1e-6)
    assert layer.calls == 1
    net.blobs["out"].diff[...] = 1
    net.backward()
    relu = (2 * x + bias > 0).astype(np.float32)
    np.testing.assert_allclose(layer.blobs[0].diff, (relu * x).sum((0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].diff, relu.sum((0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(net.blobs["data"].diff, 2 * relu, rtol=1e-6)

    saved = str(tmp_path / "w.caffemodel")
    net.save(saved)
    layer.blobs[1].data[...] = -1
    net.copy_from(saved)
    np.testing.assert_array_equal(layer.blobs[1].data, [1, 2, 3])
    loaded = caffe.Net(path, caffe.TEST, weights=saved)
    np.testing.assert_array_equal(loaded.params["sq"][1].data, [1, 2, 3])
    other = caffe.Net(path, caffe.TEST)
    other.share_with(net)
    mine = other.layers[list(other._layer_names).index("sq")]
    assert mine is not layer and mine.blobs[0] is layer.blobs[0]
    other.blobs["data"].data[...] = x
    np.testing.assert_allclose(other.forward()["out"], np.maximum(0, 2 * x + bias), rtol=1e-6)


def test_pycaffe_lets_the_users_exception_through(tmp_path, user_module):
    """Caffe (boost.python) raises the layer's own exception from caffe.Net and forward."""
    import caffe_compat.pycaffe as caffe

    with pytest.raises(RuntimeError, match="no good"):
        caffe.Net(str(python_net(tmp_path, user_module, "Broken")), caffe.TEST)
    net = caffe.Net(str(python_net(tmp_path, user_module, "FailsInForward")), caffe.TEST)
    with pytest.raises(Exception, match="bad batch") as info:
        net.forward()
    assert type(info.value).__name__ == "UsersError"


@pytest.mark.parametrize(
    "cls, message",
    [
        ("Broken", "Broken.setup raised RuntimeError: no good"),
        ("FailsInForward", "FailsInForward.forward raised UsersError: bad batch"),
    ],
)
def test_the_cli_names_the_layer_and_class_in_one_line(tmp_path, user_module, capsys, cls, message):
    """A user's bug, in setup (synth sets the layer up) or in a forward (verify runs it; synth's
    calibration skips a layer no calibrated layer reads): exit 2, one line, no traceback."""
    from caffe_compat.cli.main import main

    net = python_net(tmp_path, user_module, cls)
    weights = str(tmp_path / "w.caffemodel")
    code = main(["synth", str(net), "-o", weights, "--method", "he"])
    if cls == "FailsInForward":
        assert code == 0
        capsys.readouterr()
        code = main(["verify", str(net), weights, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert 'layer "sq"' in err and message in err


def affine_solver(tmp_path, module: str) -> str:
    """SGD (lr 0.1) on EuclideanLoss(w * 1 + b, 0) over a 2x3x4x5 batch: the loss's gradient
    is (w + b) / 2 at each of a channel's 40 outputs, so a step takes 0.1 * 20 * (w + b) from
    both w and b."""
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "DummyData" top: "data" top: "target" dummy_data_param { '
        "shape { dim: 2 dim: 3 dim: 4 dim: 5 } shape { dim: 2 dim: 3 dim: 4 dim: 5 } "
        'data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 } } }\n'
        'layer { name: "sq" type: "Python" bottom: "data" top: "sq" top: "count" '
        f'python_param {{ module: "{module}" layer: "Affine" }} }}\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "sq" bottom: "target" top: "loss" }\n'
        'layer { name: "mute" type: "Silence" bottom: "count" }\n'
    )
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 2\n'
        f'snapshot_prefix: "{tmp_path / "snap"}"\n'
    )
    return str(tmp_path / "solver.prototxt")


# Two steps from setup's w = 2, b = 0: (w, b) = (-2, -4), then (10, 8); BVLC's caffe.bin train
# (WITH_PYTHON_LAYER) snapshots these values for the same net and solver.
AFTER_TWO_STEPS = ([10.0] * 3, [8.0] * 3)


def test_pycaffe_solver_updates_the_layers_blobs(tmp_path, user_module):
    import caffe_compat.pycaffe as caffe

    solver = caffe.SGDSolver(affine_solver(tmp_path, user_module))
    blobs = solver.net.params["sq"]
    solver.step(1)
    np.testing.assert_array_equal(blobs[0].data, [-2, -2, -2])
    np.testing.assert_array_equal(blobs[1].data, [-4, -4, -4])
    solver.step(1)
    assert [b.data.tolist() for b in blobs] == list(AFTER_TWO_STEPS)


def test_train_engine_starts_from_setup_and_updates_the_blobs(tmp_path, user_module):
    from caffe_compat.io import read_weights
    from caffe_compat.train.solver import Solver

    Solver(affine_solver(tmp_path, user_module), workers=0).solve()
    saved = read_weights(tmp_path / "snap_iter_2.caffemodel").blobs["sq"]
    assert [b.tolist() for b in saved] == list(AFTER_TWO_STEPS)


def enet_dropout_net(tmp_path, param_str: str) -> str:
    """A layer as ENet's deploy nets write it; ``spatial_dropout`` is not importable here."""
    path = tmp_path / "enet.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 '
        "dim: 4 dim: 5 } } }\n"
        'layer { name: "drop" type: "Python" bottom: "data" top: "drop" python_param { '
        f'module: "spatial_dropout" layer: "SpatialDropoutLayer" param_str: "{param_str}" }} }}\n'
    )
    return str(path)


def test_enets_spatial_dropout_at_test_is_a_scale_everywhere(tmp_path):
    """caffe-enet's python/spatial_dropout.py outside TRAIN: ``top = bottom * 1 / (1 - p)``
    (float32 data times the Python float), the phase being the one its param_str names; every
    back end runs it as Power, so ONNX export holds it too."""
    from caffe_compat.verify.backends import run_onnxruntime

    loaded = load_net(enet_dropout_net(tmp_path, "{\\'phase\\': \\'TEST\\', \\'p\\': \\'0.01\\'}"))
    assert "spatial_dropout" not in sys.modules
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 5)).astype(np.float32)
    want = x * (1.0 / (1.0 - 0.01))  # numpy: float32 array * Python float stays float32
    ours = run_torch(loaded.graph, {"data": x}, ["drop"])["drop"]
    ref = forward(loaded, {"data": x}, outputs=["drop"])["drop"]
    onnx = run_onnxruntime(to_onnx(loaded.graph).SerializeToString(), {"data": x})["drop"]
    np.testing.assert_allclose(ours, want, rtol=1e-7)
    np.testing.assert_allclose(onnx, want, rtol=1e-7)
    np.testing.assert_allclose(ref, x.astype(np.float64) / 0.99, rtol=1e-7)


@pytest.mark.parametrize(
    "param_str, message",
    [
        ("{\\'phase\\': \\'TRAIN\\', \\'p\\': \\'0.5\\'}", "'spatial_dropout' cannot be imported"),
        ("{\\'phase\\': \\'TEST\\', \\'p\\': \\'1.5\\'}", "p need to be between 0 and 1"),
        ("{\\'phase\\': \\'TEST\\'}", "needs a number p"),
    ],
)
def test_enets_spatial_dropout_otherwise_is_one_line(tmp_path, param_str, message):
    """TRAIN drops random channels (the user's module is needed); a bad p is refused as the
    layer's setup refuses it."""
    with pytest.raises(CaffeCompatError, match=message) as info:
        load_net(enet_dropout_net(tmp_path, param_str))
    assert 'layer "drop"' in str(info.value) and "\n" not in str(info.value)


def test_pycaffe_calls_the_layers_methods_as_caffe_does(tmp_path, user_module):
    """The sequence BVLC's pycaffe gives for this script (recorded with real Caffe): setup once,
    reshape at Init and before every forward (Layer::Forward), twice around net.reshape();
    ``net.layers`` holds the user's object, its methods callable from the script."""
    import importlib

    import caffe_compat.pycaffe as caffe

    path = python_net(tmp_path, user_module, "Counted")
    path.write_text("force_backward: true\n" + path.read_text())
    net = caffe.Net(str(path), caffe.TEST)
    layer = net.layers[1]
    assert layer is net.layer_dict["sq"] and layer.hello() == "hi" and layer.type == "Python"
    assert list(net.params) == ["sq"] and net.params["sq"][0].data.shape == (2, 3)
    net.forward()
    net.forward()
    net.blobs["data"].reshape(4, 3, 4, 5)
    net.reshape()
    net.forward()
    net.backward()
    calls = importlib.import_module(user_module).CALLS
    init, forwards, around_reshape = ["setup", "reshape"], ["reshape", "forward"] * 2, ["reshape"]
    last = ["reshape", "forward", "backward [True]"]
    assert calls == init + forwards + around_reshape + last
    assert np.all(net.blobs["sq"].data == net.blobs["data"].data + 30)


def test_pycaffe_runs_a_data_layer_inference_would_feed(tmp_path, monkeypatch):
    """FCN's voc_layers.VOCSegDataLayer is an input to convert/verify, but pycaffe runs it, as
    Caffe does (FCN's own scripts call net.forward() on it)."""
    import caffe_compat.pycaffe as caffe

    (tmp_path / "voc_layers.py").write_text(
        "import caffe\n\n\nclass VOCSegDataLayer(caffe.Layer):\n"
        "    def setup(self, bottom, top):\n        self.n = 0\n\n"
        "    def reshape(self, bottom, top):\n        top[0].reshape(1, 3, 4, 4)\n\n"
        "    def forward(self, bottom, top):\n        self.n += 1\n"
        "        top[0].data[...] = self.n\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "voc_layers", raising=False)
    path = tmp_path / "fcn.prototxt"
    path.write_text(
        'layer { name: "data" type: "Python" top: "data" python_param { module: "voc_layers" '
        'layer: "VOCSegDataLayer" } }\n'
        'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }\n'
    )
    net = caffe.Net(str(path), caffe.TEST)
    net.forward()
    out = net.forward()["out"]
    assert out.shape == (1, 3, 4, 4) and np.all(out == 2)
    sys.modules.pop("voc_layers", None)


def test_what_the_forward_writes_into_its_blobs_stays(tmp_path, user_module):
    """The PyTorch module's parameter follows the user's blob across forwards (Caffe's blobs
    persist), also when the module runs on copies of the blobs."""
    import torch

    from caffe_compat.converters.torch.model import CaffeNet

    loaded = load_net(python_net(tmp_path, user_module, "Tally"))
    model = CaffeNet(loaded.graph)
    x = torch.ones(2, 3, 4, 5)
    assert model(x, outputs=["sq"])["sq"][0, 0, 0, 0].item() == 1
    assert model(x, outputs=["sq"])["sq"][0, 0, 0, 0].item() == 2
    (param,) = model.parameters()
    assert param.item() == 2
    with torch.no_grad():
        param.fill_(10)  # an optimizer's step reaches the user's blob
    assert model(x, outputs=["sq"])["sq"][0, 0, 0, 0].item() == 11
