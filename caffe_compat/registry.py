"""Layer support, keyed by (Caffe layer type, back end), and each type's facts: the plugin point.

Back ends (:data:`LAYER_BACKENDS`): ``shape`` (Caffe's shape rules, numpy only), ``torch``,
``onnx``, ``reference`` (a float64 numpy transcription of Caffe's forward pass, independent of
the other two) and ``reference_backward`` (the same for Caffe's backward pass: the judge of the
training engine). Built-in support is registered when the back end's package is first needed. A
user registration for a type that already has one pushes onto a stack and wins until it is
unregistered, so forks' custom layers and fixes plug in without editing the project::

    from caffe_compat import registry

    @registry.register("MyScale", "shape")
    def _(node, inputs):
        return registry.LayerShapes([inputs[0]], [])

Everything else the project knows about a layer type lives on its :class:`LayerFacts`, declared
once with :func:`describe` beside the type's shape rule (its family's file in ``shapes/``): its
role (net input, data or training layer), its parameter message, the fillers Caffe starts its
blobs from, how synthesis calibrates it, how BatchNorm folds into or through it, where OpenCV 4
computes another function, and aliases with their rewrite. pycaffe, synthesis, the passes,
``verify``, the float64 reference's planner and the support table read these through
:func:`facts`, never a table of their own.

A built-in layer type of the family ``fam`` lives in these files, and only these:

1. ``caffe_compat/shapes/fam.py``: the shape rule and the facts (:func:`describe`);
2. ``converters/torch/fam.py`` and ``converters/onnx/fam.py``: one function each;
3. ``caffe_compat/reference/fam.py``: the float64 reference, transcribed from Caffe's C++;
4. ``tests/converters/test_fam.py`` (parity of every back end with the reference, a numpy formula
   and OpenCV 4) and ``tests/reference/test_fam.py`` (the reference against hand-computed values);
5. ``proto/caffe.proto`` and the regenerated bindings, when the type brings a parameter message;
6. the README's support table, regenerated with ``python -m caffe_compat.tools.support_table``.

``tests/test_registry.py`` fails when a family lacks one of its files.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import UnsupportedLayer, UnsupportedLayersError

if TYPE_CHECKING:
    from .ir.graph import Graph, Node, Shape

LAYER_BACKENDS = ("shape", "torch", "onnx", "reference", "reference_backward")
_BUILTIN_PACKAGES = {
    "shape": "caffe_compat.shapes",
    "torch": "caffe_compat.converters.torch",
    "onnx": "caffe_compat.converters.onnx",
    "reference": "caffe_compat.reference",
    "reference_backward": "caffe_compat.reference",
}


class LayerShapes(NamedTuple):
    """What a shape rule returns: one shape per top, and the shape of each parameter blob."""

    outputs: list[Shape]
    params: list[Shape]


@dataclass(frozen=True)
class Entry:
    fn: Callable[..., Any]
    check: Callable[[Node], str | None] | None = None
    builtin: bool = False


@dataclass(frozen=True)
class LayerFacts:
    """What a layer type is, beyond its per-back-end functions (all optional).

    - ``role``: ``"input"`` (every top is a declared net input, shaped by
      ``data_shape(layer, notes)``: Caffe's Input layer), ``"data"`` (a data layer: its first top
      becomes a declared input, shaped by ``data_shape``; the layer itself is dropped; in a net
      built for training every top is an input, labels shaped by ``data_shape(layer, notes,
      labels=True)``) or ``"training"`` (dropped from inference graphs, kept in nets built for
      training).
    - ``param_message``: the ``LayerParameter`` field that holds the type's settings (e.g.
      ``"convolution_param"``); ``bias_term``: the boolean field of that message that adds the
      bias blob (folding turns it on).
    - ``fillers(layer) -> [FillerParameter]``: the filler Caffe's ``LayerSetUp`` starts each
      blob from, its defaults applied (PReLU's constant 0.25, Scale's constant 1, BatchNorm's
      zeros); pycaffe's ``Net`` without weights and ``synth --method fillers`` both use it.
      ``starting_values(shapes, rng) -> arrays``: synthesis's starting blobs when they are not
      "weights (He), then zero bias".
    - ``rescale(node, scale, shift) -> applied shift``: edit the blobs so output channel c
      becomes ``old_c * scale[c] + shift[c]`` (affine layers: calibration and BatchNorm
      folding); a layer without a bias can only be scaled and returns zeros (folding gives it
      a bias first);
      ``channel_axis``: the axis of the top where those channels are, a number or
      ``channel_axis(node, top_ndim)`` (read through :func:`channel_axis`); ``folds_batchnorm``:
      inference BatchNorm, and the affine layers after it, may fold into it.
    - ``affine(node, bottom_shape) -> (a, c) | reason``: at inference the layer computes
      ``x * a + c`` with one ``a`` and ``c`` per channel on axis 1 (BatchNorm with stored
      statistics, Scale, Bias), or the reason it does not here; folding reads it.
    - ``calibrate(node, bottom)``: synthesis sets the layer's stored statistics from the
      calibration batch it sees (BatchNorm), given as float32 arrays (float64 statistics a few
      channels at a time: ``shapes._synthesis.channel_moments``).
    - ``index_rows(node) -> N``: the layer reads its bottoms as row indices below N (Embed):
      synthetic inputs for them are integer ids.
    - ``mixes_batch(node, bottom_shape) -> bool``: an item's output depends on the other items
      of the batch (batch statistics, softmax over axis 0): a batch cannot be split.
    - ``shape_only``: the top depends on the bottoms' shapes only, never their values (PriorBox).
    - ``objectness(node, maps) -> (logits, factors, threshold, inclusive, period)``: a YOLO
      head's objectness logits and the class factors they multiply, which synth tempers on
      photos (shapes/yolo.py).
    - ``detections(node, bottom_shapes) -> rows``: the top is detection rows whose count depends
      on the data, from SSD's bottoms (loc, conf, prior: DetectionOutput); returns the most rows
      the settings allow. Compared as sets of boxes, merged by image when a batch is split.
    - ``argmax_top(node) -> (bottom, top) | None``: that top holds, per output, the flat index
      ``h * W + w`` into that bottom's plane where a maximum was (MAX Pooling's mask; -1: a
      window of padding only), a discrete choice verify accepts at near-ties (verify/ties.py).
    - ``float32_weights``: the float64 reference takes this type's large blobs as stored
      (float32) and casts them to float64 a slab of rows at a time (exact: every float32 is a
      float64), so a 400 MiB fc6 never needs an 800 MiB float64 copy (reference/_base.py).
    - ``class_top(node) -> axis | None``: top 0 holds the index of bottom 0's maximum along
      ``axis`` (-1: over every axis but the batch, flattened; ArgMax with top_k 1), another
      discrete choice verify accepts at near-ties.
    - ``opencv_shape_deviation(node, in_shapes) -> reason | None``: as ``opencv_deviation``,
      at these bottom shapes only (its depthwise 3x3 kernel on a map one pixel high or wide).
    - ``opencv_deviation(node) -> reason | None``: OpenCV 4's Caffe reader computes another
      function for this layer (measured); ``opencv_tested``: the family's tests compare the type
      with OpenCV 4 (support table column).
    - ``alias_of`` + ``rewrite(node, input_shapes) -> node``: the type is another type in
      disguise (e.g. a depthwise convolution is a Convolution with group = channels); every back
      end runs the rewritten node through the canonical type's entry.
    - ``bottoms`` / ``tops``: how many bottoms and tops Caffe's ``CheckBlobCounts`` allows, an
      exact count or ``(min, max)`` (max None: no limit); ``same_count``: as many tops as bottoms
      (``EqualNumBottomTopBlobs``). ``validate(layer) -> None`` raises ValueError naming the field
      for settings ``LayerSetUp`` refuses before any shape is known (``ir/validate.py`` runs both).
    - ``workspace(node, in_shapes, out_shapes) -> floats``: scratch a back end allocates beyond the
      tops while running the layer (im2col columns, padded copies), for the memory budget and
      the float64 reference's plan; ``columns(node, in_shapes, out_shapes) -> floats``: the
      whole im2col column buffer, which PyTorch builds only without oneDNN (synth's
      calibration).
    - ``top_fillers(layer) -> [FillerParameter]``: a data layer that draws its own tops (DummyData):
      one filler per top; a constant one fills once, any other on every forward of a net built
      for training.
    - ``loss``: a Caffe ``LossLayer``: its first top carries loss weight 1 unless ``loss_weight``
      says otherwise, and Caffe adds an anonymous top when the definition names none.
    - ``no_backward(node, bottom_index) -> reason | None``: Caffe's Backward aborts when asked
      for this bottom's diff (NOT_IMPLEMENTED, or a LOG(FATAL) such as "cannot backpropagate to
      label inputs"); the training engine refuses with the reason. ``force_backward(node,
      bottom_index) -> bool``: Caffe's ``AllowForceBackward`` (True when not given).
      ``statistics``: the blobs are running statistics, not parameters (BatchNorm: Caffe forces
      their lr_mult to 0 and the layer's forward in TRAIN updates them).
    - ``batch_source``: ``"module:Class"`` streaming the layer's batches for training
      (``caffe-compat train``: Data, ImageData, HDF5Data), imported only when training.
    - ``input_values(node, bottom_index, shape, image_shape, rng) -> array | None``: synthetic
      values for a bottom fed straight from a net input that is not an image: ROI boxes
      ``[image, x1, y1, x2, y2]`` inside the image, py-faster-rcnn's ``im_info`` (height, width,
      scale). ``image_shape`` is the net's largest 4-D input at the feed's batch (None if none).
    - ``varying_rows``: the top's first axis is a row count that depends on the data
      (Proposal's ROIs, at most its settings' count); layers fed from it keep their first axis
      free, so a back end's run may differ from the shape rule's placeholder there.
    - ``row_bound(node, in_shapes) -> int``: with ``varying_rows``, the most rows per image its
      settings allow (Proposal's ``post_nms_topn``, MS-CNN's ``max_post_nms_num``): the memory
      budget counts the values computed per ROI at that many rows, not at the placeholder's one.
    - ``row_set(node) -> bool``: the tops' rows are a set the layer sorted by a score, so
      float32 ties may order them differently from the float64 judge (Proposal's ROIs and
      scores): verify pairs them as a set. ``joins_rows(node) -> bool``: the layer stacks its
      bottoms along the first axis (Concat along axis 0): its top is such a set when every
      bottom is.
    - ``error_gain(node, value) -> {bottom index: gain}``: how much an absolute error in that
      bottom can grow or shrink through the layer (its Lipschitz constant in max norm):
      Proposal's boxes move by the anchor's size times an error in their deltas, Power (power
      1) by |scale|, a product by a bottom (two-bottom Scale, Axpy) by the other factor's
      largest value. ``value(name)`` gives the judge's array for a value (None if not kept, or
      its max |value| alone); verify's float32 error scale (verify/compare.py
      ``error_scales``) multiplies the bottom's by it, and the bottoms named add (the terms of
      a product) while the others pass the largest.
    - ``dialect(layer, blob_count) -> note | None``: settle which fork's meaning a layer of a
      type two forks define differently has (from its fields, and the number of blobs its
      weights hold when known), moving a message a fork wrote at a field number BVLC holds
      (``caffe_compat.io.dialects``); it writes the decision into the layer's fields.
      ``net_settings(layer, net) -> note | None``: settings the layer's C++ derives in LayerSetUp
      from the layers around it (RCF's AutoCrop: its offsets, from the coordinate maps along
      its bottoms' paths), written into the layer's fields when the net is read (after every
      earlier layer's), so the shape rule and every back end read one answer.
    - ``origin``: where a type outside BVLC Caffe comes from (the forks that define it, and how
      the net tells their meanings apart where two forks share the name); the support table
      shows it, docs/forks.md explains it. None: BVLC Caffe.
    - ``feedable(layer, given) -> bool``: this layer is a data source an inference graph feeds
      instead of running (a Python data layer: FCN's voc_layers, or any whose tops ``given``,
      the caller's input shapes, names): its first top becomes an input, as a ``"data"``
      layer's does (shape from ``given``, else asked for), other tops only when given.
    - ``user_instance``: the node's ``state`` is the user's own set-up layer object (Python
      layers): pycaffe's ``net.layers`` holds it, and its ``blobs`` are the layer's parameters,
      started from what its ``setup`` wrote.
    - ``family``: the module base name that holds the type in every folder (set by describe).
    """

    role: str | None = None
    data_shape: Callable[..., Any] | None = None
    param_message: str | None = None
    bias_term: str | None = None
    starting_values: Callable[..., Any] | None = None
    fillers: Callable[..., Any] | None = None
    rescale: Callable[..., Any] | None = None
    channel_axis: int | Callable[..., int] = 1
    folds_batchnorm: bool = False
    affine: Callable[..., Any] | None = None
    calibrate: Callable[..., None] | None = None
    index_rows: Callable[..., int] | None = None
    mixes_batch: Callable[..., bool] | None = None
    shape_only: bool = False
    detections: Callable[..., int] | None = None
    objectness: Callable[..., Any] | None = None
    argmax_top: Callable[..., tuple[int, int] | None] | None = None
    class_top: Callable[..., int | None] | None = None
    float32_weights: bool = False
    opencv_deviation: Callable[..., str | None] | None = None
    opencv_shape_deviation: Callable[..., str | None] | None = None
    opencv_tested: bool = False
    alias_of: str | None = None
    rewrite: Callable[..., Any] | None = None
    bottoms: int | tuple[int, int | None] | None = None
    tops: int | tuple[int, int | None] | None = None
    same_count: bool = False
    validate: Callable[..., None] | None = None
    workspace: Callable[..., int] | None = None
    columns: Callable[..., int] | None = None
    top_fillers: Callable[..., Any] | None = None
    loss: bool = False
    statistics: bool = False
    batch_source: str | None = None
    no_backward: Callable[..., str | None] | None = None
    force_backward: Callable[..., bool] | None = None
    input_values: Callable[..., Any] | None = None
    varying_rows: bool = False
    row_bound: Callable[..., int] | None = None
    row_set: Callable[..., bool] | None = None
    joins_rows: Callable[..., bool] | None = None
    error_gain: Callable[..., Any] | None = None
    dialect: Callable[..., str | None] | None = None
    net_settings: Callable[..., str | None] | None = None
    origin: str | None = None
    feedable: Callable[..., bool] | None = None
    user_instance: bool = False
    family: str = ""


ROLES = ("input", "data", "training")
_NO_FACTS = LayerFacts()
_facts: dict[str, list[LayerFacts]] = {}
_table: dict[tuple[str, str], list[Entry]] = {}
_loading: set[str] = set()
_loaded: set[str] = set()


def _import_builtins(backend: str) -> None:
    if backend in _loaded or backend in _loading:
        return
    _loading.add(backend)
    try:
        package = importlib.import_module(_BUILTIN_PACKAGES[backend])
        loader = getattr(package, "load_all", None)
        if loader is not None:
            loader()
        _loaded.add(backend)
    finally:
        _loading.discard(backend)


def register(
    types: str | Iterable[str],
    backend: str,
    *,
    check: Callable[[Node], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator registering ``fn`` for each layer type on ``backend``.

    Inside the project's own packages a second built-in registration for the same key is a bug and
    raises; anywhere else the new entry overrides the existing one until :func:`unregister`.
    ``check(node)`` may return a reason string when a particular layer's settings are unsupported.
    """
    if backend not in LAYER_BACKENDS:
        raise ValueError(f"unknown back end {backend!r}; expected one of {LAYER_BACKENDS}")
    names = [types] if isinstance(types, str) else list(types)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        # By module, not only by load order: a test or user may import one built-in rule
        # module directly before the back end's built-ins were loaded.
        package = _BUILTIN_PACKAGES[backend]
        builtin = backend in _loading or fn.__module__.startswith(package + ".")
        if not builtin:
            _import_builtins(backend)  # user entries must stack above the built-ins
        for name in names:
            stack = _table.setdefault((name, backend), [])
            if builtin and any(e.builtin for e in stack):
                raise RuntimeError(f"duplicate built-in {backend} converter for {name!r}")
            stack.append(Entry(fn, check, builtin))
        return fn

    return decorator


def describe(types: str | Iterable[str], **facts: Any) -> None:
    """Declare the :class:`LayerFacts` of each layer type (called beside its shape rule).

    A later declaration for the same type (a user's) overrides the built-in one, like
    :func:`register`; the family defaults to the declaring module's base name."""
    caller = sys._getframe(1).f_globals.get("__name__", "")
    facts.setdefault("family", caller.rsplit(".", 1)[-1])
    role = facts.get("role")
    if role is not None and role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, not {role!r}")
    entry = LayerFacts(**facts)
    if not caller.startswith(_BUILTIN_PACKAGES["shape"] + "."):
        _import_builtins("shape")
    for name in [types] if isinstance(types, str) else list(types):
        _facts.setdefault(name, []).append(entry)


def facts(layer_type: str) -> LayerFacts:
    """The facts of a layer type (empty facts for a type nobody described)."""
    _import_builtins("shape")
    stack = _facts.get(layer_type)
    if stack:
        return stack[-1]
    rules = _table.get((layer_type, "shape"))  # undescribed: the family is its rule's module
    if rules:
        return LayerFacts(family=rules[-1].fn.__module__.rsplit(".", 1)[-1])
    return _NO_FACTS


def role(layer_type: str) -> str | None:
    """``"input"``, ``"data"``, ``"training"`` or None (a layer that computes at inference)."""
    return facts(layer_type).role


def channel_axis(node: Node, ndim: int) -> int:
    """The axis (0 to ndim - 1) of the node's top that holds its output channels."""
    axis = facts(node.type).channel_axis
    if callable(axis):
        axis = axis(node, ndim)
    return axis % ndim if ndim else 0


def opencv_deviation(node: Node, in_shapes: list[Any] | None = None) -> str | None:
    """Why OpenCV 4's Caffe reader computes another function for this layer (at these bottom
    shapes, when given), if it does."""
    info = facts(node.type)
    reason = info.opencv_deviation(node) if info.opencv_deviation is not None else None
    if reason is None and in_shapes is not None and info.opencv_shape_deviation is not None:
        reason = info.opencv_shape_deviation(node, in_shapes)
    return reason


def described_types() -> set[str]:
    """Every layer type with declared facts."""
    _import_builtins("shape")
    return {name for name, stack in _facts.items() if stack}


def _aliased(layer_type: str, backend: str) -> Entry | None:
    """The canonical type's entry wrapped so each node is rewritten first (aliases)."""
    info = facts(layer_type)
    if info.alias_of is None or info.rewrite is None:
        return None
    target = lookup(info.alias_of, backend)
    if target is None:
        return None
    rewrite = info.rewrite

    def run(node: Node, *args: Any) -> Any:
        # Back ends call fn(node, inputs) (shape: input shapes), fn(node, ctx) (torch, onnx: a
        # frozen context with in_shapes and node), fn(node, arrays, ctx) (reference) or
        # fn(node, arrays, top_diffs, ctx) (reference_backward).
        ctx = args[-1]
        shapes = getattr(ctx, "in_shapes", None)
        if shapes is None:
            shapes = [tuple(getattr(a, "shape", a)) for a in args[0]]
        new = rewrite(node, list(shapes))
        if dataclasses.is_dataclass(ctx) and hasattr(ctx, "node"):
            args = (*args[:-1], dataclasses.replace(ctx, node=new))
        return target.fn(new, *args)

    return Entry(run, target.check, target.builtin)


def builtin_entry(layer_type: str, backend: str) -> Entry | None:
    """The project's own entry for (type, back end), ignoring user registrations above it
    (aliases resolve to their canonical type's)."""
    lookup(layer_type, backend)
    stack = _table.get((layer_type, backend), [])
    found = next((entry for entry in reversed(stack) if entry.builtin), None)
    if found is None and facts(layer_type).alias_of is not None:
        found = _aliased(layer_type, backend)
    return found


def unregister(layer_type: str, backend: str) -> None:
    """Remove the most recent registration for (type, back end), restoring the one beneath."""
    stack = _table.get((layer_type, backend))
    if not stack:
        raise KeyError(f"nothing registered for {layer_type!r} on {backend}")
    stack.pop()


def lookup(layer_type: str, backend: str) -> Entry | None:
    """The active entry for (type, back end), loading the built-ins on first use."""
    _import_builtins(backend)
    stack = _table.get((layer_type, backend))
    if stack:
        return stack[-1]
    return _aliased(layer_type, backend)


def supported_types(backend: str) -> set[str]:
    """Every type with an entry on ``backend``, aliases of supported types included."""
    _import_builtins(backend)
    direct = {name for (name, b), stack in _table.items() if b == backend and stack}
    aliases = {t for t in described_types() if facts(t).alias_of in direct}
    return direct | aliases


def missing_support(nodes: Iterable[Node], backends: Iterable[str]) -> list[UnsupportedLayer]:
    """Every (layer, back end) pair that cannot be converted, with the reason when known."""
    missing: list[UnsupportedLayer] = []
    for node in nodes:
        for backend in backends:
            entry = lookup(node.type, backend)
            if entry is None:
                missing.append(UnsupportedLayer(node.name, node.type, backend))
                continue
            if entry.check is not None:
                reason = entry.check(node)
                if reason:
                    missing.append(UnsupportedLayer(node.name, node.type, backend, reason))
    return missing


def preflight(graph: Graph, backends: Iterable[str]) -> None:
    """Raise one error listing every unsupported layer of ``graph`` before any work is done."""
    missing = missing_support(graph.nodes, backends)
    if missing:
        raise UnsupportedLayersError(missing, path=graph.path)
