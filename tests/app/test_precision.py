"""Numeric modes: named, refused where a back end cannot run them, held per model (never as
process-wide flags), and checkable against exact mode on the user's own inputs."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from _models import synth_models

from caffe_compat.app.precision import resolve_precision
from caffe_compat.app.predictor import Predictor
from caffe_compat.converters.torch.model import to_torch
from caffe_compat.converters.torch.numerics import CaffeConv
from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net
from caffe_compat.zoo import load_card


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return synth_models(tmp_path_factory)


def test_defaults_follow_the_card_on_cuda_and_exact_elsewhere():
    card = load_card("levi_hassner_age")
    assert card.cuda_precision == "fp32"
    assert resolve_precision(None, backend="torch", device="cuda", card_default="fp32") == "fp32"
    assert resolve_precision(None, backend="torch", device="cpu", card_default="fp32") == "exact"
    assert resolve_precision(None, backend="onnx", device="cuda", card_default="fp32") == "exact"


@pytest.mark.parametrize(
    ("precision", "backend", "device", "words"),
    [
        ("tf32", "onnx", "cuda", "torch back end only"),
        ("fp16", "onnx", "cpu", "torch back end only"),
        ("tf32", "torch", "cpu", "needs a CUDA device"),
        ("fp16", "torch", "cpu", "needs a CUDA device"),
        ("bf16", "torch", "cuda", "must be one of exact, fp32, tf32, fp16"),
    ],
)
def test_modes_a_back_end_cannot_run_are_refused_in_one_line(precision, backend, device, words):
    with pytest.raises(CaffeCompatError, match=words) as info:
        resolve_precision(precision, backend=backend, device=device)
    assert "\n" not in str(info.value)


def test_the_mode_lives_on_each_model_and_no_global_flag_changes(models):
    graph = load_net(models["age"]["prototxt"], models["age"]["weights"]).graph
    flags = (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32)
    a, b = to_torch(graph), to_torch(graph, precision="fp32")
    convs = [m for m in b.modules() if isinstance(m, CaffeConv)]
    assert convs and all(m.precision == "fp32" for m in convs)
    assert all(m.precision == "exact" for m in a.modules() if isinstance(m, CaffeConv))
    x = torch.from_numpy(np.random.default_rng(0).normal(0, 50, (2, 3, 227, 227)).astype("f4"))
    outs = {}

    def run(name, model):
        with torch.no_grad():
            outs[name] = model(x)

    threads = [threading.Thread(target=run, args=(n, m)) for n, m in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (torch.backends.cudnn.enabled, torch.backends.cudnn.allow_tf32) == flags
    torch.testing.assert_close(outs["a"], outs["b"], rtol=0, atol=1e-6)  # same fp32 on the CPU


def test_fp16_model_takes_and_returns_float32(models):
    graph = load_net(models["gender"]["prototxt"], models["gender"]["weights"]).graph
    model = to_torch(graph, precision="fp16")
    assert next(model.parameters()).dtype == torch.float16
    model.set_precision("exact")
    assert next(model.parameters()).dtype == torch.float32


def test_check_precision_reports_agreement_with_exact_mode(models, astronaut):
    predictor = Predictor(
        age_model=(models["age"]["prototxt"], models["age"]["weights"]),
        gender_model=(models["gender"]["prototxt"], models["gender"]["weights"]),
        precision="fp32",
        check_precision=True,
        crop="center",
    )
    assert {c.precision for c in predictor.classifiers.values()} == {"fp32"}
    faces = predictor.predict(astronaut)
    assert faces
    assert predictor.precision_agreement == {t: [len(faces), len(faces)] for t in ("age", "gender")}
