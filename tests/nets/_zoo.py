"""Whole-net fixtures for the model zoo tests: the project's prototxts (optionally at another input
size), calibrated synthesized weights written as a real caffemodel, and the parity run.

Shared by tests/nets/ and benchmarks/bench_zoo.py; nothing here asserts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from google.protobuf import text_format

from caffe_compat.budget import available_memory
from caffe_compat.io.writer import definitions_only, write_caffemodel, write_prototxt
from caffe_compat.ir.load import LoadedNet, load_net
from caffe_compat.proto import caffe_pb2
from caffe_compat.tools.fillers import fill
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify import Report, Tolerance, verify_loaded
from caffe_compat.verify.inputs import feeds_for

DATA = Path(__file__).resolve().parent / "data"
NAMES = (
    "caffenet",
    "googlenet",
    "vgg16",
    "resnet50",
    "squeezenet11",
    "mobilenet_v1",
    "dex_age",
    "dex_gender",
    "fcn8s",
)


@dataclass
class ZooNet:
    name: str
    prototxt: Path
    weights: Path
    loaded: LoadedNet  # loaded back from the written files


def prototxt(name: str, folder: Path, size: tuple[int, int] | None = None) -> Path:
    """The data file, or a copy whose Input layer declares ``size`` (H, W) instead."""
    source = DATA / f"{name}.prototxt"
    if size is None:
        return source
    net = caffe_pb2.NetParameter()
    text_format.Merge(source.read_text(encoding="utf-8"), net)
    dims = net.layer[0].input_param.shape[0].dim
    dims[2], dims[3] = size
    path = folder / f"{name}_{size[0]}x{size[1]}.prototxt"
    write_prototxt(path, net)
    return path


def bilinear_upsampling(loaded: LoadedNet, blobs: dict[str, list[np.ndarray]]) -> None:
    """Give every Deconvolution FCN's fixed upsampling: a bilinear kernel from each channel to the
    same channel, zero across channels (Caffe's ``bilinear`` filler on the diagonal)."""
    filler = caffe_pb2.FillerParameter(type="bilinear")
    rng = np.random.default_rng(0)  # unused by the bilinear filler
    for node in loaded.graph.nodes:
        if node.type != "Deconvolution":
            continue
        weight = blobs[node.name][0]
        cin, cout, kh, kw = weight.shape
        assert cin == cout and node.param.convolution_param.group == 1, node.name
        kernel = fill(filler, (1, 1, kh, kw), rng)[0, 0].astype(np.float32)
        upsample = np.zeros_like(weight)
        upsample[np.arange(cin), np.arange(cin)] = kernel
        blobs[node.name][0] = upsample


def synthesized(
    name: str,
    folder: Path,
    *,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    batch: int = 16,
    method: str = "calibrated",
) -> ZooNet:
    """The net with synthesized weights (``batch`` calibration images), as real files."""
    path = prototxt(name, folder, size)
    loaded = load_net(path)
    blobs = synthesize(loaded, seed=seed, method=method, batch=batch)
    bilinear_upsampling(loaded, blobs)
    weights = folder / f"{path.stem}.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    del loaded, blobs
    return ZooNet(name, path, weights, load_net(path, weights))


def inputs(net: ZooNet, batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    """``batch`` varied image-like inputs (mean subtracted), other than the calibration ones."""
    return feeds_for(net.loaded.graph.inputs, batch, seed=seed + 1000)


# The whole-net tier runs one net at a time on a machine of its own: it may use most of what is
# available, not the half a user's command gets by default (FCN-8s at 500x500 is estimated at
# 9.7 GiB; a 16 GiB CI machine's default budget is 7.9).
TIER_FRACTION = 0.85


def parity(net: ZooNet, feeds: dict[str, np.ndarray], devices=("cpu",)) -> Report:
    """Every blob of our PyTorch module and ONNX model against OpenCV 4 on the same files."""
    available, _ = available_memory()
    return verify_loaded(
        net.loaded,
        weights_path=str(net.weights),
        feeds=feeds,
        tolerance=Tolerance(),
        devices=devices,
        max_memory=int(available * TIER_FRACTION),
    )
