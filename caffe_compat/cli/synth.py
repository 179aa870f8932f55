"""Write weights in every shape a net needs, deterministic per seed: calibrated (default, outputs
vary with the input), plain He, or the blobs Caffe starts from (the prototxt's fillers, Caffe's
defaults where it declares none). For tests and demos: these are NOT trained weights."""

from __future__ import annotations

import argparse

import numpy as np

from .. import registry
from ..budget import Budget, footprint, plan_batch, resolve
from ..errors import CaffeCompatError, MemoryBudgetError
from ..io import write_caffemodel, write_hdf5
from ..io.atomic import check_target
from ..io.writer import definitions_only
from ..ir.load import load_net
from ..ir.phase import NetState, layer_included
from ..printable import printable
from ..tools.synth import (
    METHODS,
    PHOTO_MACS,
    PHOTOS,
    calibration_batch,
    calibration_net,
    image_sizes,
    multiply_adds,
    photo_feeds,
    synthesize,
    work_share,
)
from ..verify.inputs import feed_batch, feeds_for, index_inputs, structured_inputs
from ._common import add_memory_argument, add_net_arguments, net_options

NAME = "synth"
HELP = "synthesize weights in the shapes a net needs (V2, V1 or HDF5)"
ORDER = 60
VARIETY_BATCH = 16
VARIETY_MACS = 64e9  # the unseen inputs of the check: at most 4 VGG-16 images of work


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("prototxt", help="net definition (.prototxt, V1 or V2)")
    parser.add_argument("-o", "--output", required=True, help="weights file to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--method", choices=METHODS, default="calibrated", help="how to fill")
    parser.add_argument(
        "--format", choices=["v2", "v1", "hdf5"], default="v2", help="file layout (default v2)"
    )
    parser.add_argument(
        "--mean",
        metavar="B,G,R",
        help="the mean the net's users subtract (e.g. 104,177,123 for the res10 face detector): "
        "calibration and the checks feed images centred on it (default: a natural-image mean)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_memory_argument(parser)
    add_net_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    check_target(Path(args.output))  # a folder, device, FIFO or link: refused before any work
    if Path(args.output).exists() and not args.force:
        raise CaffeCompatError(f"refusing to overwrite {args.output} (pass --force)")
    options = net_options(args)
    budget = resolve(args.max_memory)
    loaded = load_net(args.prototxt, **options)
    mean = _parse_mean(args.mean)
    blobs = synthesize(loaded, seed=args.seed, method=args.method, max_memory=budget, mean=mean)
    checks = _variety(loaded, args.seed, budget, mean)  # before writing: a failure leaves no file
    state = NetState.make(args.phase, args.stage, args.level)
    layers = [layer for layer in loaded.net.layer if layer_included(state, layer)]
    if args.format == "hdf5":
        write_hdf5(args.output, blobs)
    else:
        if args.format == "v1":
            layers = [layer for layer in layers if registry.role(layer.type) != "input"]
        net = definitions_only(layers)
        net.name = loaded.net.name
        write_caffemodel(args.output, net, blobs, version=1 if args.format == "v1" else 2)
    count = sum(int(a.size) for arrays in blobs.values() for a in arrays)
    how = args.method
    if args.method == "calibrated":
        calibrated = calibration_net(loaded)
        batch, fixed = feed_batch(calibrated.graph, calibration_batch(calibrated))
        why = (
            "the batch the net computes across"
            if fixed
            else "at most 16 x 224 x 224 positions and 16 VGG-16 images of work"
        )
        at = "" if calibrated is loaded else f" of smaller inputs{image_sizes(calibrated.graph)}"
        how = f"calibrated on a batch of {batch}{at}, {why}"
    print(
        f"wrote {printable(str(args.output))}: {count:,} synthesized values in {len(blobs)} layers "
        f"({how}, seed {args.seed}, {args.format})"
    )
    for line in checks:
        print(line)
    return 0


def _parse_mean(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3:
        raise CaffeCompatError(f"--mean takes three numbers B,G,R, got {text!r}")
    return values


def _variety(loaded, seed: int, budget: Budget, mean: tuple[float, ...] | None = None) -> list[str]:
    """Show that the outputs vary with the input (the point of calibration), on up to
    VARIETY_BATCH unseen synthetic inputs (as many as VARIETY_MACS multiply-adds run, from the
    net alone, and the memory budget allows, or none) and on the shipped real photos (their top
    probabilities and detections; fewer for a net heavier than VGG-16, see ``work_share``)."""
    import torch

    from ..converters.torch.activations import at_expected_value
    from ..converters.torch.model import CaffeNet

    graph = loaded.graph
    if not any(_checked(graph.shapes.get(v)) for v in graph.outputs):
        return []  # no output a check line is made for (a segmentation map): nothing to run
    work = multiply_adds(loaded)
    if work > VARIETY_MACS:
        return [
            f"note  no variety check: one input is {work / 1e9:.0f} G multiply-adds, over the "
            f"check's {VARIETY_MACS / 1e9:.0f} G (the weights are calibrated as usual)"
        ]
    need = footprint(graph, loaded.inference.params)
    wanted, fixed_batch = feed_batch(graph, work_share(loaded, VARIETY_MACS, VARIETY_BATCH))
    try:
        batch = plan_batch(
            budget,
            need,
            wanted,
            fixed=2 * need.params,
            copies=1,
            what="the variety check",
            shrink=fixed_batch is None,
        )
    except MemoryBudgetError as exc:
        return [f"note  no variety check: {exc}"]
    count = None if fixed_batch is not None else batch
    feeds = feeds_for(
        graph.inputs,
        count,
        seed=seed + 1000,
        mean=mean,
        ids=index_inputs(graph),
        makers=structured_inputs(graph),
    )
    model = at_expected_value(CaffeNet(graph))  # the same lines for the same seed
    names = [graph.blob_of[v] for v in graph.outputs]
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}, outputs=names)
    lines = _spread_lines(out, f"{batch} unseen inputs")
    photos = photo_feeds(graph, mean, work_share(loaded, PHOTO_MACS, 2 * len(PHOTOS)))
    if photos is not None:
        with torch.no_grad():
            real = model(**{k: torch.from_numpy(v) for k, v in photos.items()}, outputs=names)
        count = len(next(iter(photos.values())))
        which = "4 and their mirror images" if count == 2 * len(PHOTOS) else "a share by the work"
        lines += _spread_lines(real, f"{count} real photos ({which})")
    return lines


def _classes(shape) -> bool:
    """A classifier output: (N, C > 1, 1...)."""
    return len(shape) >= 2 and shape[1] > 1 and all(d == 1 for d in shape[2:])


def _detections(shape) -> bool:
    """SSD detection rows: (1, 1, rows, 7)."""
    return len(shape) == 4 and shape[-1] == 7


def _checked(shape) -> bool:
    """An output ``_spread_lines`` makes a line for (by its inferred shape)."""
    return shape is not None and (_classes(shape) or _detections(shape))


def _spread_lines(out: dict, what: str) -> list[str]:
    """One check line per classifier or detector output."""
    lines = []
    for name, tensor in out.items():
        array = tensor.numpy()
        if _classes(array.shape):
            rows = array.reshape(array.shape[0], -1)
            classes = len(set(rows.argmax(1).tolist()))
            lines.append(
                f"check {name}: {classes} distinct argmax classes over {what}, "
                f"mean top value {float(np.mean(rows.max(1))):.3f}, "
                f"largest {float(rows.max()):.3f}"
            )
        elif _detections(array.shape):  # SSD detections: [image, class, score..]
            rows = array.reshape(-1, 7)
            images = int(rows[:, 0].max()) + 1 if len(rows) else 0
            confident = rows[rows[:, 2] > 0.5, 0].astype(int)
            kept = np.bincount(confident, minlength=images).tolist()
            scores = rows[rows[:, 2] > 0, 2]
            top = f"{float(scores.max()):.4f}" if scores.size else "none"
            lines.append(
                f"check {name}: detections over 0.5 per image on {what}: {kept}; best score {top}"
            )
    return lines
