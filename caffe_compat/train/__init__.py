"""Training Caffe nets as Caffe does: the net built for training and its gradients
(``TrainNet``), Caffe's solvers and learning-rate policies (``solver``, ``solver_rules``,
``lr_policy``), solver snapshots (``solverstate``), Caffe's data layers (``data``), and a
``torch.optim`` face of the same update rules (``optim``)."""

from __future__ import annotations

from .net import Blob, Param, TrainNet

__all__ = ["Blob", "Param", "TrainNet"]
