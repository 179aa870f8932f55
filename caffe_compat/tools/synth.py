"""Synthesised weights in exactly the shapes a net needs, calibrated so outputs vary with input.

Plain He initialisation drives these nets into a softmax that picks the same class for every
input, which would make every parity test built on them prove little. ``calibrated`` (the default)
instead runs a batch of image-like inputs through the net once, layer by layer, and rescales each
convolution and inner product so its outputs are centred with unit spread per channel (heads get a
wider spread, so class scores differ from input to input without saturating); BatchNorm statistics
are set from the batch they see. The scales are rounded to float16 precision so tiny floating-point
differences between machines do not change the weights. Deterministic for a given seed.

What calibration runs comes from the net alone, never from the machine: an item larger than
16 x 224 x 224 positions runs at halved sizes (``calibration_net``), and a two-stage detector's
per-ROI heads see CALIBRATION_ROWS of its ROIs (``_calibration_rows``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from .. import headroom, registry
from ..budget import FLOAT32, Budget, footprint, last_readers, layer_peaks, resolve
from ..errors import CaffeCompatError
from ..headroom import format_size
from ..ir.graph import Graph, Node, Shape
from ..ir.infer import infer_shapes
from ..ir.load import LoadedNet
from ..progress import Progress
from ..shapes._synthesis import STATS_SLAB, StartingValues, channel_moments, half_precision
from ..verify.inputs import feed_batch, feeds_for, index_inputs, structured_inputs
from .fillers import caffe_fill

METHODS = ("calibrated", "he", "fillers")
HEAD_SPREAD = 1.5  # spread of a head layer's outputs across the calibration batch
MAX_GAIN = 1e4  # largest calibration gain (float16 holds it)
# Beside every blob, the largest layer's blobs are made up to two more times at once: the torch
# copy calibration builds and the rescaled copy (float32, see ``scale_rows``); draws are made in
# float32 pieces of DRAW_CHUNK values, never as one float64 array.
LARGEST_LAYER_COPIES = 2
DRAW_CHUNK = 1 << 20
# A ``calibrate`` hook (BatchNorm, DenseBlock) may copy what it sees to float64 and make one
# more float64 temporary: four times its float32 bytes (BatchNorm's own takes slabs: an upper
# bound). Rescaled layers take their statistics in slabs (``channel_moments``).
CALIBRATION_FLOAT64 = 4
# The calibration batch: about this many positions per input (16 images of 224 x 224), at
# least one item and at most CALIBRATION_BATCH (see ``calibration_batch``).
CALIBRATION_BATCH = 16
CALIBRATION_POSITIONS = 16 * 224 * 224
CALIBRATION_ROWS = 256  # ROIs calibration runs a two-stage detector's heads on (all images)
CALIBRATION_MACS = 256e9  # 16 VGG-16 images of 224 x 224 (15.5 G multiply-adds each)
PHOTO_MACS = 128e9  # the photos a net's heads are set on: 8 VGG-16 images; fewer if heavier


def _he(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """He-normal float32 values, drawn in float64 pieces of DRAW_CHUNK: the generator fills
    sequentially, so the values equal one whole-shape draw cast to float32, without a float64
    copy of the whole blob (twice its float32 size: fc6 of VGG-16 is 411 MB)."""
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    std = math.sqrt(2.0 / max(fan_in, 1))
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for start in range(0, flat.size, DRAW_CHUNK):
        stop = min(start + DRAW_CHUNK, flat.size)
        flat[start:stop] = rng.normal(0.0, std, stop - start)
    return out


def initial_blobs(
    node: Node,
    shapes: list[Shape],
    rng: np.random.Generator,
    method: str,
    starts: Mapping[str, StartingValues] | None = None,
) -> list[np.ndarray]:
    """Starting values for one layer's blobs (``starts`` overrides them per layer type)."""
    if starts and node.type in starts:
        return starts[node.type](shapes, rng)
    facts = registry.facts(node.type)
    if method == "fillers" and facts.fillers is not None:
        return caffe_fill(node.param, shapes, rng)
    if facts.starting_values is not None:
        return facts.starting_values(shapes, rng)
    return [_he(s, rng) if i == 0 else np.zeros(s, np.float32) for i, s in enumerate(shapes)]


def _heads(graph: Graph) -> set[str]:
    """Affine layers whose outputs reach a net output without passing another affine layer."""
    heads: set[str] = set()
    frontier = list(graph.outputs)
    seen: set[str] = set()
    while frontier:
        value = frontier.pop()
        if value in seen:
            continue
        seen.add(value)
        node = graph.producer(value)
        if node is None:
            continue
        if registry.facts(node.type).rescale is not None:
            heads.add(node.name)
        else:
            frontier.extend(node.inputs)
    return heads


def multiply_adds(loaded: LoadedNet) -> float:
    """Multiply-adds of one batch item through the net's affine layers (those with a
    ``rescale`` fact: convolutions, deconvolutions, inner products), from the shapes alone:
    each weight once per position of its top, or of its bottom where that has fewer (a
    deconvolution). Other layers are left out: the affine layers are where the time goes."""
    graph, total = loaded.graph, 0.0
    for node in graph.nodes:
        shapes = loaded.inference.params.get(node.name)
        if not shapes or registry.facts(node.type).rescale is None or not node.inputs:
            continue
        bottom, top = graph.shapes.get(node.inputs[0]), graph.shapes.get(node.outputs[0])
        if bottom is None or top is None:
            continue
        axis = registry.channel_axis(node, len(top))
        out = math.prod(d for i, d in enumerate(top) if i not in (0, axis))
        total += math.prod(shapes[0]) * min(out, math.prod(bottom[2:]))
    return total


def calibration_batch(loaded: LoadedNet, most: int = CALIBRATION_BATCH) -> int:
    """The calibration batch, from the net alone (never the machine: a seed gives one set of
    weights everywhere): about CALIBRATION_POSITIONS positions per input, i.e. 16 images of
    224 x 224 at ImageNet size, ``round(16 * 224 * 224 / positions per item)`` of the input with
    the most positions (H x W, D x H x W for clips), and at most CALIBRATION_MACS multiply-adds
    (``multiply_adds``: 16 VGG-16 images); at least 1, at most ``most``. A 512 x 1024
    segmentation net calibrates on 2 images, a 16 x 112 x 112 clip net on 4 clips, PSPNet-101 at
    713 x 713 on one; a channel's statistics are still over thousands of positions."""
    positions = max(
        (math.prod(shape[2:]) for shape in loaded.graph.inputs.values() if len(shape) > 2),
        default=1,
    )
    batch = round(CALIBRATION_POSITIONS / max(positions, 1))
    work = multiply_adds(loaded)
    if work > 0:
        batch = min(batch, round(CALIBRATION_MACS / work))
    return max(1, min(most, batch))


def calibration_net(loaded: LoadedNet) -> LoadedNet:
    """The net calibration runs: ``loaded`` itself, or, where one item has more than
    CALIBRATION_POSITIONS positions (a 1344 x 2688 pedestrian detector: 4.5 times as many,
    its first two values alone 1.8 GB), the same layers at inputs whose height and width are
    halved (rounded up: 2k + 1 goes to k + 1) until an item has at most that many. A channel's
    statistics are still over hundreds of thousands of input positions, and the size comes
    from the net alone. The copy shares the layers (the weights calibration sets are the
    net's), with its own shapes; kept only where every shape rule takes the smaller size and
    gives the same blobs (a net with fixed sizes inside calibrates at its own)."""
    graph = loaded.graph
    inputs = dict(graph.inputs)
    images = [n for n, s in inputs.items() if s is not None and len(s) > 3]

    def most() -> int:
        return max((math.prod(inputs[n][2:]) for n in images), default=0)

    while most() > CALIBRATION_POSITIONS and all(min(inputs[n][-2:]) > 1 for n in images):
        for name in images:
            shape = inputs[name]
            inputs[name] = (*shape[:-2], *((d + 1) // 2 for d in shape[-2:]))
    if inputs == graph.inputs:
        return loaded
    smaller = dataclasses.replace(graph, inputs=inputs, shapes={})
    try:
        inference = infer_shapes(smaller)
    except CaffeCompatError:
        return loaded
    if inference.params != loaded.inference.params:
        return loaded
    return dataclasses.replace(loaded, graph=smaller, inference=inference)


def image_sizes(graph: Graph) -> str:
    """The image inputs' sizes (" at H x W"), for messages."""
    shapes = [s for s in graph.inputs.values() if s is not None and len(s) > 3]
    return " at " + ", ".join(" x ".join(str(d) for d in s[2:]) for s in shapes)


def work_share(loaded: LoadedNet, budget: float, most: int) -> int:
    """How many batch items ``budget`` multiply-adds run (at least 1, at most ``most``): the
    photos and unseen inputs of synth's checks, from the net alone."""
    work = multiply_adds(loaded)
    return max(1, min(most, round(budget / work))) if work > 0 else most


def _feeding_calibrated(graph: Graph) -> set[str]:
    """The layers calibration runs: each that sets its blobs from what it sees (a ``rescale``
    or ``calibrate`` fact, with blobs), and every layer feeding one. Post-processing after
    the last of them (YOLO or SSD decoding, NMS over untempered heads that can hold millions of
    candidates) changes no weight, so it is not run."""
    needed: set[str] = set()
    wanted: set[str] = set()
    for node in reversed(graph.nodes):
        info = registry.facts(node.type)
        sets_blobs = bool(node.blobs) and (info.rescale is not None or info.calibrate is not None)
        if sets_blobs or wanted.intersection(node.outputs):
            needed.add(node.name)
            wanted.update(node.inputs)
    return needed


def _calibration_rows(tops: tuple) -> tuple:
    """A ``varying_rows`` layer's tops (ROIs, their scores) cut to CALIBRATION_ROWS rows spread
    evenly over all of them (every image, every score rank), for calibration only: the layers
    after it run once per row (MS-CNN's 1024 -> 512 3 x 3 convolution on each of up to 2000
    ROIs an image: 0.3 T multiply-adds), and a channel's statistics need hundreds of rows,
    not thousands. Which rows are kept follows from their count alone (no draw, no machine)."""
    count = tops[0].shape[0]
    if count <= CALIBRATION_ROWS:
        return tops
    import torch

    keep = torch.arange(CALIBRATION_ROWS) * count // CALIBRATION_ROWS
    return tuple(t[keep] if t.dim() and t.shape[0] == count else t for t in tops)


def _calibrate(
    graph: Graph,
    seed: int,
    batch: int | None,
    bar: Progress,
    mean: tuple[float, ...] | None = None,
) -> None:
    """One pass in execution order, fixing each affine and BatchNorm layer from what it sees.

    The forward is PyTorch's float32 engine on the CPU (deterministic for a seed on one
    machine; the weights need to be well scaled, not exact). A rescaled layer's top is not
    recomputed: the rescale contract makes channel c ``old_c * scale[c] + shift[c]``, applied to
    the top in place; statistics are taken in float64 a few channels at a time
    (``channel_moments``), so no value gets a whole float64 copy."""
    import torch

    from ..converters.torch._base import TorchContext
    from ..converters.torch.activations import at_expected_value

    feeds = feeds_for(
        graph.inputs,
        batch,
        seed=seed + 1,
        mean=mean,
        ids=index_inputs(graph),
        makers=structured_inputs(graph),
    )
    env: dict[str, torch.Tensor] = {k: torch.from_numpy(v) for k, v in feeds.items()}
    heads = _heads(graph)
    last = last_readers(graph)
    needed = _feeding_calibrated(graph)
    with torch.no_grad():
        for index, node in enumerate(graph.nodes):
            if node.name not in needed:
                bar.update()  # no calibrated layer reads what it makes (detection decoding)
                continue
            inputs = [env[v] for v in node.inputs]
            info = registry.facts(node.type)
            if info.calibrate is not None and node.blobs:
                info.calibrate(node, [x.numpy() for x in inputs])
            build = registry.lookup(node.type, "torch")
            assert build is not None
            module = at_expected_value(build.fn(node, TorchContext(graph, node)))
            result = module(*inputs)
            del module  # its copy of the blobs
            if isinstance(result, torch.Tensor):
                result = (result,)
            if info.varying_rows:
                result = _calibration_rows(result)
            top = result[0]
            # A top with one axis has no batch or positions to take channel statistics over.
            if info.rescale is not None and node.blobs and top.dim() > 1:
                axis = registry.channel_axis(node, top.dim())
                centre, var = channel_moments(top.numpy(), axis)
                target = HEAD_SPREAD if node.name in heads else 1.0
                # A channel constant over the batch keeps a finite (float16) gain.
                gain = np.minimum(target / np.maximum(np.sqrt(var), 1e-6), MAX_GAIN)
                scale = half_precision(gain)
                shift = half_precision(-centre * scale)
                # A layer without a bias takes only the scale: the top gets what the blobs give.
                shift = info.rescale(node, scale, shift)
                view = [1] * top.dim()
                view[axis] = -1
                top = top.contiguous()
                top.mul_(torch.from_numpy(scale.astype(np.float32)).view(view))
                top.add_(torch.from_numpy(shift.astype(np.float32)).view(view))
                result = (top, *result[1:])
            for value, tensor in zip(node.outputs, result):
                env[value] = tensor
            del inputs, result, top
            for value in [v for v in env if last.get(v, -1) <= index]:
                del env[value]  # read by no later layer: calibration keeps only live values
            bar.update()


def _whole_columns(graph: Graph, name: str) -> float:
    """Bytes per batch item of a layer's whole im2col columns (its ``columns`` fact)."""
    node = graph.node(name)
    ins = [graph.shapes.get(v) for v in node.inputs]
    outs = [graph.shapes.get(v) for v in node.outputs]
    if any(s is None for s in ins + outs) or not ins or not ins[0]:
        return 0.0
    floats = registry.facts(node.type).columns(node, ins, outs)  # type: ignore[misc]
    return FLOAT32 * floats / max(ins[0][0], 1)


def _torch_onednn() -> bool:
    """True where PyTorch's CPU convolutions go through oneDNN (all but tiny ones)."""
    import torch

    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def calibration_peak(
    graph: Graph, params: Mapping[str, list[Shape]], batch: int
) -> tuple[float, str]:
    """Bytes calibration holds at its worst layer, and what they are: every blob, the values
    still to be read, and the layer's own extra copies (its torch module and rescaled blobs;
    a statistics slab, ``STATS_SLAB`` float64 values and numpy's one temporary of it; a
    ``calibrate`` hook's float64 copies of what it sees, CALIBRATION_FLOAT64 times its float32
    bytes; or its scratch, which torch makes per thread, not per batch item, and frees before
    the statistics). A convolution's im2col columns count only where PyTorch has no oneDNN
    (measured: a 64 -> 64 7 x 7 convolution at 360 x 480 adds nothing beside its top with it,
    2.1 GB of columns without it)."""
    threads = max(1, min(batch, headroom.torch_threads()))
    columns = not _torch_onednn()
    total = sum(FLOAT32 * math.prod(s) for shapes in params.values() for s in shapes)
    slab = 2 * 8 * STATS_SLAB
    worst, worst_detail = 0.0, ""
    for layer in layer_peaks(graph, params):
        info = registry.facts(graph.node(layer.name).type)
        stats = 0.0
        if info.calibrate is not None:
            stats = CALIBRATION_FLOAT64 * batch * layer.top_per_item
        elif info.rescale is not None:
            stats = min(slab, 4 * batch * layer.top_per_item)
        scratch = layer.scratch_per_item
        if info.columns is not None:  # PyTorch's own scratch, not the float64 reference's
            scratch = _whole_columns(graph, layer.name) if columns else 0.0
        extra = max(threads * scratch, stats)
        bytes_ = total + batch * layer.live_per_item + LARGEST_LAYER_COPIES * layer.params
        bytes_ += extra
        if bytes_ > worst:
            worst = bytes_
            worst_detail = (
                f'weights {format_size(total)}, at layer "{layer.name}": values '
                f"{format_size(batch * layer.live_per_item)} "
                f"({format_size(layer.live_per_item)} per item), its weight copies "
                f"{format_size(LARGEST_LAYER_COPIES * layer.params)}, scratch or float64 "
                f"statistics {format_size(extra)}"
            )
    return worst, worst_detail


def synthesize(
    loaded: LoadedNet,
    *,
    seed: int = 0,
    method: str = "calibrated",
    batch: int = CALIBRATION_BATCH,
    starts: Mapping[str, StartingValues] | None = None,
    progress: bool = True,
    max_memory: Budget | int | str | None = None,
    mean: tuple[float, ...] | None = None,
) -> dict[str, list[np.ndarray]]:
    """Weights for every layer of ``loaded`` (attached to its graph too), by layer name.

    ``starts`` replaces the starting values of chosen layer types before calibration (e.g. Scale
    biases that keep a deep plain ReLU chain mostly active). ``progress`` draws a bar of the
    calibration pass on stderr when it is a terminal. ``max_memory`` (default: a share of
    the available memory, see ``budget.py``) is checked before any blob is made. Calibration
    runs ``calibration_net(loaded)`` (smaller inputs where one item is very large) at the
    batch ``calibration_batch`` gives it, from the net alone (a net computing across its batch
    axis: its declared batch); neither shrinks to fit the budget, since the weights depend on
    them. ``mean`` (B, G, R) is what the net's users subtract (the res10 detector's 104, 177,
    123); default: a natural-image mean."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    graph = loaded.graph
    calibrated = calibration_net(loaded) if method == "calibrated" else loaded
    batch, fixed = feed_batch(calibrated.graph, calibration_batch(calibrated, batch))
    budget = resolve(max_memory)
    need = footprint(graph, loaded.inference.params)
    weights = need.params + LARGEST_LAYER_COPIES * need.largest_params
    if method == "calibrated":
        peak, detail = calibration_peak(calibrated.graph, calibrated.inference.params, batch)
        at = image_sizes(calibrated.graph) if calibrated is not loaded else ""
        budget.require(peak, f"calibrating synthesized weights at batch {batch}{at} ({detail})")
    else:
        budget.require(weights, "synthesizing weights")
    rng = np.random.default_rng(seed)
    for node in graph.nodes:
        shapes = loaded.inference.params.get(node.name, [])
        node.blobs = initial_blobs(node, shapes, rng, method, starts) if shapes else []
    if method == "calibrated":
        label = f"synth {graph.name or 'net'}"
        with Progress(len(graph.nodes), label=label, unit="layers", enabled=progress) as bar:
            _calibrate(calibrated.graph, seed, None if fixed else batch, bar, mean)
        photos = photo_feeds(graph, mean, work_share(loaded, PHOTO_MACS, 2 * len(PHOTOS)))
        if photos is not None:
            _temper_heads(graph, photos)
    return {node.name: list(node.blobs) for node in graph.nodes if node.blobs}


# --- heads set on real photos -------------------------------------------------------------------
# Noise-calibrated heads saturate on real photos (GoogLeNet: prob 1.0 on a photo, 0.2 on noise;
# the res10 SSD: every one of 200 detections >= 0.9985). So the heads are set last on the shipped
# photos (caffe_compat/data/photos, and their mirror images): a classifier's logits are scaled so
# the largest top probability over the photos is TOP_PROB_MAX (measured mean top probability on
# photos: TOP_PROB_RANGE; the synth command's check reports it); an SSD's class scores are spread
# (margin spread SSD_MARGIN_SPREAD) and shifted so that no photo has more than
# SSD_KEPT_PER_PHOTO priors scoring over 0.5. Photos differ a lot (logits ten times apart), so
# other photos have fewer detections and lower top probabilities.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
TOP_PROB_MAX = 0.9
TOP_PROB_RANGE = (0.15, 0.9)
SSD_MARGIN_SPREAD = 2.0
SSD_KEPT_PER_PHOTO = 5
YOLO_KEPT_PER_PHOTO = 20


def photo_feeds(
    graph: Graph, mean: tuple[float, ...] | None = None, most: int = 2 * len(PHOTOS)
) -> dict[str, np.ndarray] | None:
    """The shipped photos and their mirror images as the net's one image input (resized, BGR,
    ``mean`` or the default mean subtracted), the first ``most`` of them (a net heavier than
    VGG-16 gets fewer: ``work_share``); None for a net without exactly one 3-channel image
    input, or one computing across its batch."""
    import cv2

    from ..app.images import read_image
    from ..verify.inputs import DEFAULT_BGR_MEAN

    if len(graph.inputs) != 1 or feed_batch(graph, 2)[1] is not None:
        return None
    name, shape = next(iter(graph.inputs.items()))
    if len(shape) != 4 or shape[1] != 3 or min(shape[2:]) < 8:
        return None
    folder = Path(__file__).resolve().parent.parent / "data" / "photos"
    images = []
    for photo in PHOTOS:
        image = read_image(folder / f"{photo}.jpg")  # the package's one photo reader
        image = cv2.resize(image, (shape[3], shape[2]))  # as blobFromImage resizes
        images += [image, image[:, ::-1]]
    batch = np.stack(images[: max(1, most)]).astype(np.float32).transpose(0, 3, 1, 2)
    centre = mean if mean is not None and len(mean) == 3 else DEFAULT_BGR_MEAN
    batch -= np.asarray(centre, np.float32)[None, :, None, None]
    return {name: np.ascontiguousarray(batch)}


def _softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _values(graph: Graph, feeds: Mapping[str, np.ndarray], values: list[str]) -> dict:
    """``values`` (value names) computed on ``feeds`` by PyTorch, as float64: layer by layer as
    calibration runs them (each layer's module built, run and dropped, values freed after
    their last reader), so the weights are never copied whole (a whole model would hold them
    twice: 2.6 GiB for Cascade R-CNN's three VGG heads). Only the layers ``values`` need run;
    sampled dropout runs at its expected value (a seed gives one file)."""
    import torch

    from ..converters.torch._base import TorchContext
    from ..converters.torch.activations import at_expected_value

    keep = set(values)
    needed: set[str] = set()
    wanted = set(keep)
    for node in reversed(graph.nodes):
        if wanted.intersection(node.outputs):
            needed.add(node.name)
            wanted.update(node.inputs)
    env: dict[str, torch.Tensor] = {k: torch.from_numpy(v) for k, v in feeds.items()}
    found = {k: env[k] for k in keep if k in env}
    last = last_readers(graph)
    with torch.no_grad():
        for index, node in enumerate(graph.nodes):
            if node.name not in needed:
                continue
            build = registry.lookup(node.type, "torch")
            assert build is not None
            module = at_expected_value(build.fn(node, TorchContext(graph, node)))
            result = module(*[env[v] for v in node.inputs])
            del module
            if isinstance(result, torch.Tensor):
                result = (result,)
            for value, tensor in zip(node.outputs, result):
                env[value] = tensor
                if value in keep:
                    found[value] = tensor
            del result
            for value in [v for v in env if last.get(v, -1) <= index]:
                del env[value]
    return {k: v.double().numpy() for k, v in found.items()}


def _probability_chain(graph: Graph, value: str, found: dict) -> tuple[str, int] | None:
    """(the logits value, classes) when ``value`` is, or is a reshaping of, a softmax of an
    earlier value over its class axis (checked numerically on ``found``)."""
    for _ in range(4):
        node = graph.producer(value)
        if node is None or len(node.inputs) != 1:
            return None
        below = node.inputs[0]
        if below not in found or value not in found:
            return None
        classes = found[below].shape[-1] if found[below].ndim == 3 else found[below].shape[1]
        if classes > 1 and found[below].size == found[value].size:
            logits = _class_rows(found[below], classes)
            if np.allclose(_softmax_rows(logits), _class_rows(found[value], classes), atol=1e-5):
                return below, classes
        value = below
    return None


def _class_rows(x: np.ndarray, classes: int) -> np.ndarray:
    """(rows, classes): the class axis last (N, C, ...) -> moved; (N, P, C) -> as is."""
    if x.ndim == 3 and x.shape[-1] == classes:
        return x.reshape(-1, classes)
    return np.moveaxis(x, 1, -1).reshape(-1, classes)


def _chain(graph: Graph, value: str, steps: int = 4) -> list[str]:
    chain = [value]
    for _ in range(steps):
        node = graph.producer(chain[-1])
        if node is None or len(node.inputs) != 1:
            break
        chain.append(node.inputs[0])
    return chain


def _one_row_per_item(shape: Shape | None) -> bool:
    """A value of one class row per batch item: (N, C, 1...) or (N, 1, C), as ``_class_rows``
    reads it. Only such values can set a classifier head on the photos, or give a check line."""
    if shape is None or len(shape) < 2:
        return False
    if len(shape) == 3 and shape[1] == 1:
        return True
    return all(d == 1 for d in shape[2:])


def _row_varying(graph: Graph) -> set[str]:
    """Values whose first axis is a data-dependent row count (a ``varying_rows`` layer's ROIs
    and all computed from them: a detector's per-ROI class scores), not the batch."""
    varying: set[str] = set()
    for node in graph.nodes:
        if registry.facts(node.type).varying_rows or varying.intersection(node.inputs):
            varying.update(node.outputs)
    return varying


def _temper_heads(graph: Graph, feeds: Mapping[str, np.ndarray]) -> None:
    """Classifier, SSD and YOLO heads set on the photos (see the constants above). A net with
    no detector and no value of one class row per item near an output (a segmentation net; a
    two-stage detector, whose class rows are per ROI, which the shape rule cannot count) has
    no head to set: the photos are not run through it. YOLO decoding is not run (its maps
    are what is tempered)."""
    wanted = {v for out in graph.outputs for v in _chain(graph, out)}
    detectors = [n for n in graph.nodes if n.param.HasField("detection_output_param")]
    yolos = [n for n in graph.nodes if registry.facts(n.type).objectness is not None]
    varying = _row_varying(graph)
    rows = any(_one_row_per_item(graph.shapes.get(v)) for v in wanted - varying)
    if not detectors and not yolos and not rows:
        return
    for node in detectors:
        wanted.update(_chain(graph, node.inputs[1]))
    for node in yolos:
        wanted.difference_update(node.outputs)
        wanted.update(node.inputs)
    found = _values(graph, feeds, sorted(wanted))
    for node in yolos:
        _temper_yolo(graph, node, found)
    for out in graph.outputs:
        chain = _probability_chain(graph, out, found)
        if chain is not None and graph.producer(out) not in detectors and out not in varying:
            logits, classes = chain
            rows = _class_rows(found[logits], classes)
            if rows.shape[0] == next(iter(feeds.values())).shape[0]:  # one row per photo
                _scale_heads(graph, logits, _temperature(rows), None)
    for node in detectors:
        chain = _probability_chain(graph, node.inputs[1], found)
        if chain is not None:
            _temper_ssd(graph, node, chain, found, len(next(iter(feeds.values()))))


def _temperature(rows: np.ndarray) -> float:
    """The factor on the logits that makes the largest top probability over the photos
    TOP_PROB_MAX (a photo's logits can be ten times another's: the mean alone would let some
    saturate)."""
    low, high = -10.0, 10.0  # log2 of the factor
    for _ in range(40):
        middle = (low + high) / 2
        top = float(_softmax_rows(rows * 2.0**middle).max(axis=1).max())
        low, high = (middle, high) if top < TOP_PROB_MAX else (low, middle)
    return float(half_precision(np.array(2.0 ** ((low + high) / 2))))


def _temper_ssd(graph: Graph, node: Node, chain: tuple[str, int], found: dict, photos: int):
    """Spread the foreground margins (logit minus background logit) of every prior and shift
    them so about SSD_KEPT_PER_PHOTO priors per photo score over 0.5."""
    logits, classes = chain
    background = int(node.param.detection_output_param.background_label_id)
    rows = _class_rows(found[logits], classes).reshape(photos, -1, classes)
    foreground = np.delete(rows, background, axis=2).max(axis=2)
    margin = foreground - rows[:, :, background]
    scale = float(half_precision(np.array(SSD_MARGIN_SPREAD / max(float(margin.std()), 1e-6))))
    ranked = -np.sort(-(margin * scale), axis=1)
    kept = min(SSD_KEPT_PER_PHOTO, ranked.shape[1] - 1)
    shift = float(half_precision(np.array(-np.max((ranked[:, kept - 1] + ranked[:, kept]) / 2))))
    _scale_heads(
        graph, logits, scale, lambda n: np.where(np.arange(n) % classes != background, shift, 0.0)
    )


def _temper_yolo(graph: Graph, node: Node, found: dict) -> None:
    """Lower the objectness logits of a YOLO net's heads (one shift for every map) so that no
    photo has more than YOLO_KEPT_PER_PHOTO candidates over the confidence threshold: noise
    calibrated heads put most of the (box, class) pairs over it, millions for a batch, which
    no NMS should face (a trained net has a few dozen)."""
    objectness = registry.facts(node.type).objectness
    assert objectness is not None
    logits, factors, threshold, at, period = objectness(node, [found[m] for m in node.inputs])

    def most(shift: float) -> int:
        counts = 0
        for o, f in zip(logits, factors):
            score = f / (1.0 + np.exp(-(o + shift)))
            over = score >= threshold if at else score > threshold
            counts = counts + over.reshape(over.shape[0], -1).sum(axis=1)
        return int(np.max(counts))

    if most(0.0) <= YOLO_KEPT_PER_PHOTO:
        return
    low, high = -64.0, 0.0  # most(low) <= YOLO_KEPT_PER_PHOTO < most(high)
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (middle, high) if most(middle) <= YOLO_KEPT_PER_PHOTO else (low, middle)
    # A margin over float16 rounding (1/128 at 10) and float32 sums keeps the count at most K.
    shift = float(half_precision(np.array(low - 1 / 32)))
    for value in dict.fromkeys(node.inputs):  # channel 4 of each box: its objectness
        _scale_heads(graph, value, 1.0, lambda n: np.where(np.arange(n) % period == 4, shift, 0.0))


def _scale_heads(
    graph: Graph, value: str, scale: float, shifts: Callable[[int], np.ndarray] | None
) -> None:
    """Multiply the affine layers that ``value`` is computed from (through layers without
    parameters) by ``scale``, and add ``shifts(channels)`` to their channels (an SSD's
    foreground classes, a YOLO map's objectness)."""
    frontier, seen = [value], set()
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        node = graph.producer(current)
        if node is None:
            continue
        info = registry.facts(node.type)
        if info.rescale is None or not node.blobs:
            frontier.extend(node.inputs)
            continue
        channels = node.blobs[0].shape[0] if node.blobs[0].ndim > 1 else len(node.blobs[0])
        channels = len(node.blobs[1]) if len(node.blobs) > 1 else channels
        shift = np.zeros(channels) if shifts is None else shifts(channels)
        info.rescale(node, np.full(channels, scale), shift)
