"""Training Caffe nets as Caffe does: the net built for training, its gradients (``TrainNet``)."""

from __future__ import annotations

from .net import Blob, Param, TrainNet

__all__ = ["Blob", "Param", "TrainNet"]
