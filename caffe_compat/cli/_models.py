"""Model options shared by ``predict`` and ``evaluate``: which nets, on which back end and device,
in which numeric mode, with which mean and labels; read into the application's one settings
object (``AppSettings``)."""

from __future__ import annotations

import argparse
from typing import Any

from ..app.precision import PRECISIONS
from ..app.settings import DEFAULT_BATCH, TASKS, AppSettings
from ..errors import CaffeCompatError


def add_model_arguments(parser: argparse.ArgumentParser, tasks: tuple[str, ...]) -> None:
    """--backend, --<task>-model, --mean, --batch, --cache-dir, --download, --device."""
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        help="run the nets with PyTorch (CaffeNet) or ONNX Runtime (default: onnx when a model "
        "is an .onnx file, else torch)",
    )
    for task in tasks:
        parser.add_argument(
            f"--{task}-model",
            nargs="+",
            metavar="FILE",
            help=f"{task} net: PROTOTXT WEIGHTS (converted in memory) or MODEL.onnx (default: "
            f"the zoo's released weights)",
        )
        parser.add_argument(
            f"--{task}-labels",
            metavar="A,B,...",
            help=f"comma-separated names of the {task} net's outputs (default: the zoo card's)",
        )
    parser.add_argument(
        "--mean",
        metavar="zoo|MEAN.binaryproto",
        help="mean to subtract: default the card's per-channel B, G, R values; 'zoo' for the "
        "released mean image (downloaded like the weights), or a .binaryproto file",
    )
    parser.add_argument(
        "--batch", type=int, default=DEFAULT_BATCH, help="faces per net call (default: %(default)s)"
    )
    parser.add_argument("--cache-dir", help="model cache folder (default: $CAFFE_COMPAT_HOME)")
    parser.add_argument(
        "--download", action="store_true", help="download the zoo weights when not in the cache"
    )
    parser.add_argument("--device", help="torch device (default: cpu)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="numeric mode of the nets on CUDA: exact (Caffe's im2col + GEMM), fp32 (cuDNN, no "
        "TF32), tf32 or fp16 (torch on CUDA only); default: the zoo card's mode whose parity "
        "holds (fp32 for the Levi-Hassner nets) on CUDA, exact elsewhere",
    )
    parser.add_argument(
        "--check-precision",
        action="store_true",
        help="also run the nets in exact mode and report how often the argmax agrees",
    )


def app_settings(args: argparse.Namespace, tasks: tuple[str, ...], **fields: Any) -> AppSettings:
    """The settings the shared arguments give for ``tasks``, plus ``fields`` (the command's
    own arguments, as ``AppSettings`` fields)."""
    values: dict[str, Any] = {
        "models": tasks,
        "backend": args.backend,
        "batch": args.batch,
        "cache_dir": args.cache_dir,
        "download": args.download,
        "device": args.device or "cpu",
        "mean": args.mean,
        "precision": args.precision,
        "check_precision": args.check_precision,
    }
    for task in TASKS:
        spec = getattr(args, f"{task}_model", None)
        if spec is not None and len(spec) not in (1, 2):
            raise CaffeCompatError(
                f"--{task}-model takes PROTOTXT WEIGHTS or MODEL.onnx, got {len(spec)} paths "
                "(put the photos before the model options)"
            )
        labels = getattr(args, f"{task}_labels", None)
        if task in tasks:
            values[f"{task}_model"] = tuple(spec) if spec else None
            if labels:
                values[f"{task}_labels"] = tuple(x.strip() for x in labels.split(","))
    return AppSettings(**{**values, **fields})


def predict_settings(args: argparse.Namespace) -> AppSettings:
    """``predict``'s settings (both engines): the shared arguments plus its face and limit
    options."""
    from ..app.settings import parse_models

    limits = {"max_pixels": args.max_pixels} if args.max_pixels is not None else {}
    return app_settings(
        args,
        parse_models(args.models),
        crop=args.crop,
        detector=tuple(args.detector) if args.detector else None,
        confidence=args.confidence,
        margin=args.margin,
        no_detect=args.no_detect,
        **limits,
    )
