"""Reproduce Levi & Hassner's Adience protocol: per-fold exact (and, for age, 1-off) accuracy of an
age or gender net on the aligned faces, mean ± std over the folds, in the over-sampling and/or
center-crop mode, and a confusion matrix PNG. Needs the fold files (fold_0_data.txt ...) and
Adience's aligned faces (faces/<user_id>/landmark_aligned_face.<face_id>.<original_image>).
Missing images are counted and skipped. The paper scored one net per fold on its held-out fold;
one model scored on all folds is what this does, and the report says so."""

from __future__ import annotations

import argparse
import json
import sys

from ..progress import Progress
from ._models import add_model_arguments, app_settings

NAME = "evaluate"
HELP = "Adience accuracy of the age or gender net (the paper's 5-fold protocol)"
ORDER = 80


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folds", required=True, metavar="DIR", help="folder of fold_*_data.txt")
    parser.add_argument(
        "--faces", required=True, metavar="DIR", help="Adience aligned faces folder"
    )
    parser.add_argument("--task", choices=("age", "gender"), default="age", help="default: age")
    parser.add_argument(
        "--crop",
        choices=("oversample", "center", "opencv", "both"),
        default="oversample",
        help="oversample (10 crops, default), center, opencv, or both (oversample and center)",
    )
    parser.add_argument(
        "--confusion", metavar="OUT.png", help="write the confusion matrix (or matrices) as PNG"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    add_model_arguments(parser, ("age", "gender"))


def run(args: argparse.Namespace) -> int:
    from ..app.evaluate import evaluate_adience, render, write_confusion

    crops = ("oversample", "center") if args.crop == "both" else (args.crop,)
    settings = app_settings(args, (args.task,), progress=not args.json)
    bar = Progress(None, label="evaluate", unit="faces")
    try:
        evaluation = evaluate_adience(
            args.folds,
            args.faces,
            task=args.task,
            crops=crops,
            settings=settings,
            on_progress=bar.set,
        )
    finally:
        bar.close()
    if args.confusion:
        write_confusion(evaluation, args.confusion)
    if args.json:
        out = evaluation.to_dict()
        out["confusion_png"] = args.confusion
        print(json.dumps(out, indent=2))
    else:
        print(render(evaluation))
        if args.confusion:
            print(f"confusion matrix: {args.confusion}")
    if evaluation.missing or evaluation.unreadable:
        print(
            f"caffe-compat: {evaluation.missing} face image(s) missing, {evaluation.unreadable} "
            "unreadable; they were skipped",
            file=sys.stderr,
        )
    return 0
