"""The driver: blob naming, inputs, the checks made before any computing, and memory."""

from __future__ import annotations

import numpy as np
import pytest

from caffe_compat import registry
from caffe_compat.errors import CaffeCompatError
from caffe_compat.reference import forward
from caffe_compat.reference._plan import infer, memory_limit, peak_bytes, value_bytes

from .conftest import inputs_layer

RNG = np.random.default_rng(9)
NET = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm" type: "LRN" bottom: "pool" top: "norm" lrn_param { local_size: 3 k: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "norm" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def weights() -> dict:
    rng = np.random.default_rng(1)
    return {
        "conv": [rng.standard_normal((4, 3, 3, 3)).astype(np.float32), np.full(4, 0.1, np.float32)],
        "fc": [rng.standard_normal((5, 4 * 3 * 4)).astype(np.float32), np.zeros(5, np.float32)],
    }


@pytest.fixture
def net(build):
    return build(inputs_layer(data=np.zeros((4, 3, 7, 9))) + NET, weights())


def test_blob_names_follow_caffes_net_blobs(net):
    x = RNG.standard_normal((4, 3, 7, 9)).astype(np.float32)
    every = forward(net, {"data": x})
    assert list(every) == ["data", "conv", "pool", "norm", "fc", "prob"]
    assert all(a.dtype == np.float64 for a in every.values())
    both = forward(net, {"data": x}, outputs=["conv@conv", "conv"])
    assert list(both) == ["conv@conv", "conv"]
    np.testing.assert_array_equal(both["conv"], np.maximum(both["conv@conv"], 0))
    np.testing.assert_array_equal(every["conv"], both["conv"])  # the value after in-place ReLU
    np.testing.assert_array_equal(every["data"], x.astype(np.float64))


def test_weights_are_used_in_float64(net):
    x = RNG.standard_normal((4, 3, 7, 9)).astype(np.float32)
    norm = forward(net, {"data": x}, outputs=["norm"])["norm"]
    fc = forward(net, {"data": x}, outputs=["fc"])["fc"]
    w = weights()["fc"][0].astype(np.float64)
    np.testing.assert_allclose(fc, norm.reshape(4, -1) @ w.T, rtol=1e-13, atol=1e-13)


def test_an_in_place_layer_on_an_input(build):
    x = RNG.standard_normal((2, 3))
    graph = build(
        inputs_layer(data=x) + 'layer { name: "r" type: "ReLU" bottom: "data" top: "data" }'
    )
    out = forward(graph, {"data": x})
    assert list(out) == ["data"]
    np.testing.assert_array_equal(out["data"], np.maximum(x, 0))


def test_a_loaded_net_works_like_its_graph(tmp_path):
    from caffe_compat.ir.load import load_net

    path = tmp_path / "net.prototxt"
    path.write_text(
        inputs_layer(data=np.zeros((1, 3)))
        + 'layer { name: "t" type: "TanH" bottom: "data" top: "t" }'
    )
    x = RNG.standard_normal((2, 3))
    np.testing.assert_allclose(forward(load_net(path), {"data": x})["t"], np.tanh(x), rtol=1e-15)


@pytest.mark.parametrize(
    ("feeds", "outputs", "message"),
    [
        ({}, None, "missing input"),
        ({"data": np.zeros((4, 3, 7, 9)), "extra": np.zeros(1)}, None, "no input named extra"),
        ({"data": np.zeros((4, 3, 7, 9), dtype=complex)}, None, "not real numbers"),
        ({"data": np.zeros((4, 3, 7, 9))}, ["nope"], "no blob or value named 'nope'"),
        ({"data": np.zeros((4, 3, 9, 9))}, None, r'layer "fc".*these input sizes need'),
        ({"data": np.zeros((4, 3))}, None, r'layer "conv" \(Convolution\)'),
    ],
)
def test_bad_calls_fail_before_computing(net, feeds, outputs, message):
    with pytest.raises(CaffeCompatError, match=message):
        forward(net, feeds, outputs=outputs)


def test_missing_weights_name_the_layer(build):
    graph = build(inputs_layer(data=np.zeros((1, 3, 7, 9))) + NET)
    with pytest.raises(CaffeCompatError, match=r'layer "conv" \(Convolution\): has no weights'):
        forward(graph, {"data": np.zeros((1, 3, 7, 9))})


def test_every_unsupported_layer_in_one_error(build):
    registry.register("ZzShapeOnly", "shape")(lambda node, ins: registry.LayerShapes(ins, []))
    try:
        graph = build(
            inputs_layer(data=np.zeros((1, 3, 8, 8)))
            + 'layer { name: "odd" type: "ZzShapeOnly" bottom: "data" top: "odd" }\n'
            + 'layer { name: "sp" type: "Pooling" bottom: "odd" top: "sp" pooling_param { pool: STOCHASTIC kernel_size: 2 } }\n'
        )
        with pytest.raises(
            CaffeCompatError,
            match=r"2 unsupported layer\(s\): ZzShapeOnly \[reference\]: odd; Pooling \[reference: STOCHASTIC",
        ):
            forward(graph, {"data": np.zeros((1, 3, 8, 8))})
    finally:
        registry.unregister("ZzShapeOnly", "shape")


def test_memory_limit_reads_meminfo():
    limit = memory_limit()
    assert limit > 0
    with open("/proc/meminfo", encoding="ascii") as handle:
        available = next(
            int(line.split()[1]) * 1024 for line in handle if line.startswith("MemAvailable:")
        )
    assert limit <= available


@pytest.fixture
def passes(monkeypatch):
    """How many graph walks each forward made (one per image when split)."""
    import caffe_compat.reference.run as run

    calls = []
    walk = run.run_graph

    def counted(*args, **kwargs):
        calls.append(1)
        return walk(*args, **kwargs)

    monkeypatch.setattr(run, "run_graph", counted)
    return calls


def test_image_by_image_when_the_batch_does_not_fit(net, passes):
    x = RNG.standard_normal((4, 3, 7, 9))
    whole = forward(net, {"data": x})
    keep = set(net.final.values())
    shapes = infer(net, {"data": x.shape}, check_weights=False)
    full = peak_bytes(net, shapes, keep)
    one = peak_bytes(net, infer(net, {"data": (1, 3, 7, 9)}, check_weights=False), keep)
    merged = sum(8 * int(np.prod(shapes[v])) for v in keep)
    assert one + merged < full
    split = forward(net, {"data": x}, max_memory=one + merged)
    assert len(passes) == 1 + 4
    assert list(split) == list(whole)
    for name in whole:
        np.testing.assert_allclose(split[name], whole[name], rtol=1e-12, atol=1e-15)


def test_refused_when_images_would_mix(build):
    x = RNG.standard_normal((4, 6))
    graph = build(
        inputs_layer(data=x)
        + 'layer { name: "p" type: "Softmax" bottom: "data" top: "p" softmax_param { axis: 0 } }'
    )
    with pytest.raises(
        CaffeCompatError, match=r"needs \d+ bytes .* over the limit of 100 bytes .*mixes the images"
    ):
        forward(graph, {"data": x}, max_memory=100)


def test_refused_when_one_image_does_not_fit(net):
    x = RNG.standard_normal((4, 3, 7, 9))
    with pytest.raises(CaffeCompatError, match=r"even one image at a time needs \d+ bytes"):
        forward(net, {"data": x}, max_memory=2000)
    with pytest.raises(CaffeCompatError, match="a single image cannot be split"):
        forward(net, {"data": x[:1]}, max_memory=2000)


DETECTOR = """
layer { name: "pb" type: "PriorBox" bottom: "map" bottom: "data" top: "pb" prior_box_param { min_size: 4 } }
layer { name: "sig" type: "Sigmoid" bottom: "conf" top: "conf" }
layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "pb" top: "det"
  detection_output_param { num_classes: 3 confidence_threshold: %s nms_param { nms_threshold: 0.45 } } }
"""


@pytest.mark.parametrize("threshold", [0.3, 0.999])
def test_detections_are_renumbered_when_split(build, passes, threshold):
    feeds = {
        "data": np.zeros((3, 3, 8, 8)),
        "map": np.zeros((3, 1, 2, 2)),
        "loc": RNG.standard_normal((3, 16)) * 0.1,
        "conf": RNG.standard_normal((3, 12)),
    }
    graph = build(inputs_layer(**feeds) + DETECTOR % threshold)
    whole = forward(graph, feeds, outputs=["det", "pb"])
    keep = {"det", "pb"}
    shapes = infer(graph, {k: v.shape for k, v in feeds.items()}, check_weights=False)
    full = peak_bytes(graph, shapes, keep)
    one = {k: (1, *v.shape[1:]) for k, v in feeds.items()}
    limit = peak_bytes(graph, infer(graph, one, check_weights=False), keep)
    limit += sum(value_bytes(graph, shapes)[v] for v in keep)
    assert limit < full
    split = forward(graph, feeds, outputs=["det", "pb"], max_memory=limit)
    assert len(passes) == 1 + 3
    rows = whole["det"][0, 0]
    if threshold > 0.9:  # nothing kept: one placeholder row per image
        np.testing.assert_array_equal(rows[:, :2], [[0, -1], [1, -1], [2, -1]])
    else:
        assert set(rows[:, 0]) == {0, 1, 2} and (rows[:, 1] > 0).all()
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name])


def test_a_sink_receives_each_value_once_computed_and_nothing_is_kept(net):
    """Streamed: each requested value goes to the sink as computed, equal to what a kept run
    returns; the call returns nothing, and its peak is the live values only."""
    x = RNG.standard_normal((4, 3, 7, 9)).astype(np.float32)
    wanted = [v for v in net.values if v != "data"]
    kept = forward(net, {"data": x}, outputs=wanted)
    seen: dict[str, np.ndarray] = {}
    order: list[str] = []

    def sink(name: str, array: np.ndarray) -> None:
        seen[name] = array.copy()
        order.append(name)

    assert forward(net, {"data": x}, outputs=wanted, sink=sink) == {}
    assert order == wanted  # graph order, each once
    for name in wanted:
        np.testing.assert_array_equal(seen[name], kept[name])
    shapes = infer(net, {"data": x.shape}, check_weights=False)
    live = peak_bytes(net, shapes, ())  # the live values only: what a streamed run is held to
    assert forward(net, {"data": x}, outputs=wanted, sink=sink, max_memory=live) == {}
    with pytest.raises(CaffeCompatError, match="streamed already"):
        forward(net, {"data": x}, outputs=wanted, sink=sink, max_memory=live - 1)


def test_a_resumed_rerun_redoes_only_the_layers_from_the_first_fixed_value(net):
    """With ``fixed`` and ``resume``, the forward starts at the first layer making a fixed
    value, reading the values before from ``resume``: the same values from there on as a
    whole rerun, and none of the earlier ones."""
    x = RNG.standard_normal((4, 3, 7, 9)).astype(np.float32)
    wanted = [v for v in net.values if v != "data"]
    first = forward(net, {"data": x}, outputs=wanted)
    fixed = {"pool": first["pool"] + 1.0}
    whole = forward(net, {"data": x}, outputs=wanted, fixed=fixed)
    resumed = forward(net, {"data": x}, outputs=wanted, fixed=fixed, resume=first)
    assert set(resumed) == {"pool", "norm", "fc", "prob"}
    for name in resumed:
        np.testing.assert_array_equal(resumed[name], whole[name])


def test_large_weights_are_read_in_float32_slabs_to_the_same_result(net, monkeypatch):
    """A Convolution's or InnerProduct's large blob stays float32 (no float64 copy of a 400
    MiB fc6) and is cast a slab of rows at a time: the same top, to float64 rounding."""
    from caffe_compat.reference import _base, run

    x = RNG.standard_normal((4, 3, 7, 9)).astype(np.float32)
    whole = forward(net, {"data": x})
    monkeypatch.setattr(_base, "LARGE_BLOB", 20)  # conv: 27 per row; fc: 48 per row
    monkeypatch.setattr(run, "LARGE_BLOB", 20)
    conv, fc = net.node("conv"), net.node("fc")
    assert run._blobs(conv)[0].dtype == np.float32 and run._blobs(conv)[1].dtype == np.float64
    assert run._blobs(fc)[0].dtype == np.float32
    assert run._blobs(net.node("norm")) == ()
    sliced = forward(net, {"data": x})
    for name, value in whole.items():
        np.testing.assert_allclose(sliced[name], value, rtol=1e-13, atol=1e-13)
    rows = list(_base.weight_rows(np.ones((5, 6), np.float32), 0))
    assert [r for r, _ in rows] == [slice(0, 3), slice(3, 5)]  # 20 // 6 = 3 rows a slab
    assert all(s.dtype == np.float64 for _, s in rows)
