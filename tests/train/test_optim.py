"""The torch.optim face (CaffeOptimizer, CaffeLR, param_groups) against real Caffe's recorded
runs, and where torch.optim.SGD leaves Caffe's path."""

from __future__ import annotations

import pytest
import torch
from _caffe_runs import CASES, RUNS, load_run, relative_error

from caffe_compat.train.optim import CaffeLR, CaffeOptimizer


@pytest.mark.parametrize("name", [c for c in CASES if not c.startswith("restore")])
def test_torch_optimizer_replays_caffe(name):
    """The torch.optim face: parameters start at Caffe's initial weights and receive Caffe's
    gradients; after each step they must equal Caffe's next weights (free-running: any error
    would compound)."""
    run = load_run(name)
    count = len(run.names)
    params = [torch.nn.Parameter(torch.tensor(run.weights(k)[0])) for k in range(count)]
    groups = [
        {"params": [p], "lr_mult": lr, "decay_mult": decay}
        for p, (lr, decay) in zip(params, run.mults)
    ]
    optimizer = CaffeOptimizer.from_solver(groups, run.solver)
    scheduler = CaffeLR(optimizer, solver=run.solver)
    for t in range(run.steps):
        for k, p in enumerate(params):
            p.grad = torch.tensor(run.grads(k)[t])
            if run.statistics[k]:
                with torch.no_grad():  # BatchNorm statistics come from the forward pass
                    p.copy_(torch.tensor(run.weights(k)[t]))
        if "lr" in run.arrays:
            assert optimizer.param_groups[0]["lr"] == float(run.arrays["lr"][t])
        optimizer.step()
        scheduler.step()
    for k, p in enumerate(params):
        if run.statistics[k]:
            continue
        error = relative_error(p.detach().numpy(), run.weights(k)[-1])
        assert error <= 1e-4, f"{name}: blob {run.names[k]} differs by {error:.2e} of max"


def test_torch_sgd_differs_after_a_rate_change():
    """Why the torch face exists: torch.optim.SGD keeps the rate out of the momentum history,
    so after a step-policy drop it leaves Caffe's trajectory."""
    run = load_run("sgd_step")
    w0, grads = run.weights(2)[0], run.grads(2)
    ours = torch.nn.Parameter(torch.tensor(w0))
    plain = torch.nn.Parameter(torch.tensor(w0))
    caffe_opt = CaffeOptimizer([ours], base_lr=0.05, momentum=0.9)
    torch_opt = torch.optim.SGD([plain], lr=0.05, momentum=0.9)
    sched = CaffeLR(caffe_opt, "step", gamma=0.5, stepsize=6)
    torch_sched = torch.optim.lr_scheduler.StepLR(torch_opt, step_size=6, gamma=0.5)
    gaps = []
    for t in range(12):
        ours.grad = torch.tensor(grads[t])
        plain.grad = torch.tensor(grads[t])
        caffe_opt.step()
        torch_opt.step()
        sched.step()
        torch_sched.step()
        gaps.append(relative_error(plain.detach().numpy(), ours.detach().numpy()))
    assert max(gaps[:6]) < 1e-6  # identical while the rate is fixed
    assert gaps[-1] > 1e-3  # then torch leaves Caffe's path


def test_param_groups_of_a_converted_model(tmp_path):
    """A converted model's parameters, grouped with the prototxt's lr_mult/decay_mult in Caffe's
    blob order; lr_mult 0 blobs left out unless asked for."""
    import caffe_compat as cc
    from caffe_compat.io import write_caffemodel
    from caffe_compat.io.writer import definitions_only
    from caffe_compat.train.optim import param_groups

    run = load_run("frozen")  # conv1 frozen, ip1 lr_mult 1 / 2, decay_mult 3 / 0
    net_path = RUNS / "frozen.net.prototxt"
    blobs = {
        "conv1": [run.weights(0)[0], run.weights(1)[0]],
        "ip1": [run.weights(2)[0], run.weights(3)[0]],
    }
    layers = [layer for layer in run.net.layer if layer.name in blobs]
    write_caffemodel(tmp_path / "w.caffemodel", definitions_only(layers), blobs)
    loaded = cc.load_net(net_path, tmp_path / "w.caffemodel", input_shapes={"data": (4, 3, 6, 6)})
    model = cc.to_torch(loaded.graph)
    groups = param_groups(model, net_path)
    assert [(g["lr_mult"], g["decay_mult"]) for g in groups] == [(1.0, 3.0), (2.0, 0.0)]
    assert tuple(groups[0]["params"][0].shape) == (3, 64) or groups[0]["params"][0].numel() == 192
    every = param_groups(model, net_path, include_frozen=True)
    assert [(g["lr_mult"], g["decay_mult"]) for g in every] == [
        (0.0, 0.0),
        (0.0, 0.0),
        (1.0, 3.0),
        (2.0, 0.0),
    ]
