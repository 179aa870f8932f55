"""`load_pretrained` for every zoo card, on both back ends: synthesized weights in each model's
released layer names and shapes stand in for the released file (so they must load, strictly, into
the zoo prototxt) (the card's identity is set to theirs), so the whole
path (identity check, conversion cache, torch module, ONNX model) runs offline. The ONNX model is
checked against the torch module on the same inputs."""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from caffe_compat.app.pretrained import load_pretrained
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.inputs import feeds_for
from caffe_compat.zoo import ModelCard, list_models, load_card

SMALL = (
    "squeezenet_v1_1",
    "res10_300x300_ssd",
    "open_nsfw",
    "bvlc_googlenet",
    "levi_hassner_gender",
)


def stand_in(name: str, home) -> ModelCard:
    """Synthesized weights at the card's cache path, and the card with their identities."""
    card = load_card(name)
    loaded = load_net(card.prototxt_path())
    path = home / card.name / card.weights.file
    path.parent.mkdir(parents=True)
    write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, method="he"))
    data = path.read_bytes()
    identities = {
        "sha1": hashlib.sha1(data).hexdigest(),
        "git_blob": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    known = dict(card.weights.identities()) or {"sha256": None}
    known = {kind: identities[kind] for kind in known}
    spec = dataclasses.replace(card.weights, size=None, **known)  # not the released size
    return dataclasses.replace(card, weights=spec)


def check(name: str, home) -> None:
    ort = pytest.importorskip("onnxruntime")
    card = stand_in(name, home)
    x = feeds_for({card.input.blob: (2, *card.input.shape)}, 2, seed=4)[card.input.blob]
    model = load_pretrained(card, cache_dir=home)
    assert not model.training and model.labels == card.labels
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    proto = load_pretrained(card, cache_dir=home, backend="onnx")  # from the conversion cache
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run([card.output], {card.input.blob: x})
    if card.task == "classification":
        rows = got.reshape(2, -1)
        assert rows.shape == (2, len(card.labels)) and np.isfinite(rows).all()
        if card.output == "prob":
            np.testing.assert_allclose(rows.sum(axis=1), 1.0, rtol=0, atol=1e-5)
        np.testing.assert_allclose(onnx_out, got, rtol=1e-4, atol=1e-4 * float(np.abs(got).max()))
    else:  # detections: image id, label, confidence of every kept box, in the same order
        assert got.shape[:2] == (1, 1) and got.shape[3] == 7 and onnx_out.shape == got.shape
        kept = got[0, 0][got[0, 0, :, 0] >= 0]
        assert set(kept[:, 0].tolist()) <= {0.0, 1.0}  # image ids of the batch of two
        assert set(kept[:, 1].tolist()) <= {1.0}  # only faces: background is never reported
        assert (kept[:, 2] >= 0.2).all()  # the deploy's confidence threshold
        # Box corners are left out: random weights can decode them to overflowing values.
        np.testing.assert_allclose(onnx_out[..., :3], got[..., :3], rtol=0, atol=1e-4)


# One classifier and the detector in the fast tier; the other small cards with the slow tier.
FAST_CARDS = ("squeezenet_v1_1", "res10_300x300_ssd", "levi_hassner_gender")


@pytest.mark.parametrize(
    "name", [n if n in FAST_CARDS else pytest.param(n, marks=pytest.mark.slow) for n in SMALL]
)
def test_load_pretrained_on_both_back_ends(name, tmp_path):
    check(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in list_models() if n not in SMALL])
def test_load_pretrained_on_both_back_ends_large(name, tmp_path):
    check(name, tmp_path)
