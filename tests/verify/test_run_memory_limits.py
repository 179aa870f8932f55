"""Whole nets verified under a 4 GiB address-space limit (RLIMIT_AS, as a batch system sets it):
each passes (verify holds the judges' values and one back end's at a time, so VGG-16's 528 MB
of weights and ResNet-152's 382 MB of values per image fit), never a refusal, MemoryError,
bad_alloc, protobuf EncodeError or crash (exit 3 or a signal). Slow: synthesized weights for
VGG-16 and a ResNet-152 are written first, and each verify runs the float64 reference, OpenCV
4 where installed, PyTorch and ONNX Runtime."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize

pytestmark = pytest.mark.slow

ZOO = Path(__file__).resolve().parents[2] / "zoo"
CAP = 4 << 30


def resnet152() -> str:
    """ResNet-152 (He et al. 2015) in the released deploy layout: blocks 3, 8, 36, 3."""
    from nets.make_prototxts import resnet

    return resnet("ResNet-152", (3, 8, 36, 3)).text()


@pytest.fixture(scope="module", params=["squeezenet_v1_1", "vgg_ilsvrc_16", "resnet_152"])
def net(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "resnet_152":
        prototxt = folder / "resnet_152.prototxt"
        prototxt.write_text(resnet152())
    else:
        prototxt = ZOO / f"{request.param}.prototxt"
    loaded = load_net(prototxt)
    weights = folder / "weights.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), synthesize(loaded, method="he"))
    return prototxt, weights


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, resource.RLIM_INFINITY))


def test_verify_under_4_gib_passes(net):
    prototxt, weights = net
    run = subprocess.run(
        [sys.executable, "-m", "caffe_compat", "verify", str(prototxt), str(weights), "-q"],
        capture_output=True,
        text=True,
        timeout=1800,
        preexec_fn=_cap,
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-3000:])
    assert "PASS" in run.stdout, run.stdout[-3000:]


def test_vgg16_synth_convert_verify_under_4_gib(tmp_path):
    """The judge's chain on VGG-16 (528 MB of weights), every step its own process under the
    cap: synth (calibrated, float32 draws) and convert (the ONNX model serialised weight by
    weight) succeed; verify passes or refuses in one line naming the limit."""
    prototxt = ZOO / "vgg_ilsvrc_16.prototxt"
    weights, prefix = tmp_path / "w.caffemodel", tmp_path / "vgg16"

    def step(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "caffe_compat", "-q", *argv],
            capture_output=True,
            text=True,
            timeout=1800,
            preexec_fn=_cap,
            cwd=tmp_path,
        )

    synth = step("synth", str(prototxt), "-o", str(weights))
    assert synth.returncode == 0, synth.stderr[-3000:]
    convert = step("convert", str(prototxt), str(weights), "-o", str(prefix))
    assert convert.returncode == 0, convert.stderr[-3000:]
    assert prefix.with_suffix(".onnx").stat().st_size > 500 * 2**20
    verify = step("verify", str(prototxt), str(weights))
    assert verify.returncode == 0, verify.stderr[-3000:]
