"""``caffe.Net``: BVLC pycaffe's Net (its C++ core and its Python additions) over caffe-compat.

Names, orders, defaults and the errors scripts may catch are Caffe's; the forward and backward
passes run the converters' PyTorch layers (see _engine.py). A train/val net (data layers, losses,
Accuracy, Silence), a TRAIN-phase net and a ``force_backward`` net are built as Caffe trains them:
labels are blobs, DummyData draws its tops on every forward, MemoryData serves the arrays given to
``set_input_arrays``, Data/ImageData/HDF5Data read their sources, and ``backward`` computes the
diffs Caffe's ``Net::Init`` decided.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from itertools import zip_longest
from typing import Any

import numpy as np

from .. import registry
from ..errors import CaffeCompatError, NetDefinitionError
from ..io import read_weights, write_caffemodel, write_hdf5
from ..io.prototxt import parse_text, read_text
from ..io.upgrade import upgrade_net
from ..ir.backward import plan_backward
from ..ir.build import build_graph
from ..ir.graph import Graph
from ..ir.infer import Inference, infer_shapes
from ..ir.load import settle_by_shapes
from ..ir.phase import NetState, layer_included
from ..proto import caffe_pb2
from ..shapes.python_layer import users_exceptions
from . import _data
from ._caffe import Blob, Layer, filler_rng, log, net_seed
from ._engine import Engine, Needs
from ._layout import DATA, INPUT, NODE, SPLIT, build_layout
from ._params import copy_trained_layers, fill_blobs, share_param

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

_ARG_NAMES = ("network_file", "phase", "level", "stages", "weights")
_SIGNATURES = (
    "Net(network_file, phase, level=0, stages=None, weights=None) or "
    "Net(network_file, weights_file, phase)"
)


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_phase(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and int(value) in (TRAIN, TEST)


def _check_file(path: str | os.PathLike[str]) -> str:
    """Caffe's CheckFile: the file must open."""
    text = os.fspath(path)
    try:
        with open(text, "rb"):
            pass
    except OSError:
        raise RuntimeError(f"Could not open file {text}") from None
    return text


def _parse_init(args: tuple, kwargs: dict) -> tuple[str, int, int, list[str], str | None]:
    """Resolve the two constructors pycaffe offers, as Boost.Python's overloading does."""
    deprecated = len(args) == 3 and not kwargs and _is_path(args[0]) and _is_path(args[1])
    if deprecated and _is_phase(args[2]):
        log.warning(
            "DEPRECATION WARNING - deprecated use of Python interface; use "
            "Net('%s', %d, weights='%s') instead",
            os.fspath(args[0]),
            int(args[2]),
            os.fspath(args[1]),
        )
        return os.fspath(args[0]), int(args[2]), 0, [], os.fspath(args[1])
    bound: dict[str, Any] = dict(zip(_ARG_NAMES, args))
    problem = len(args) > len(_ARG_NAMES)
    for key, value in kwargs.items():
        problem |= key not in _ARG_NAMES or key in bound
        bound[key] = value
    stages = bound.get("stages")
    weights = bound.get("weights")
    problem |= not _is_path(bound.get("network_file")) or not _is_phase(bound.get("phase"))
    problem |= not isinstance(bound.get("level", 0), (int, np.integer))
    problem |= weights is not None and not _is_path(weights)
    problem |= stages is not None and (
        isinstance(stages, str) or not all(isinstance(s, str) for s in stages)
    )
    if problem:
        named = [f"{k}={type(v).__name__}" for k, v in kwargs.items()]
        given = ", ".join([type(a).__name__ for a in args] + named)
        raise TypeError(f"Net({given}) did not match any signature: {_SIGNATURES}")
    return (
        os.fspath(bound["network_file"]),
        int(bound["phase"]),
        int(bound.get("level", 0)),
        list(stages or []),
        None if weights is None else os.fspath(weights),
    )


def _read_net(path: str) -> tuple[caffe_pb2.NetParameter, dict[str, int]]:
    """A prototxt (any version) upgraded to V2, with each layer's line for error messages."""
    param = caffe_pb2.NetParameter()
    index = parse_text(read_text(path), param, path=path)
    upgrade_net(param, path=path)
    return param, {name: line for line, name in index.starts if name}


def needs_training(net: caffe_pb2.NetParameter, state: NetState) -> bool:
    """Whether Caffe's net would hold what only a net built for training keeps: the TRAIN
    phase, ``force_backward``, or a data, loss, Accuracy or Silence layer in this state (a
    Python data layer that inference would feed counts: here it runs)."""
    if state.phase == "TRAIN" or net.force_backward:
        return True
    return any(
        layer_included(state, layer)
        and (registry.role(layer.type) in ("data", "training") or _fed_in_inference(layer))
        for layer in net.layer
    )


def _fed_in_inference(layer: caffe_pb2.LayerParameter) -> bool:
    feedable = registry.facts(layer.type).feedable
    return feedable is not None and bool(feedable(layer, {}))


def _check_memory(graph, params: Mapping, training: bool) -> None:
    """Before any blob is allocated: the blobs (and, for training, their diffs and what a
    backward keeps) and the parameters must fit the memory budget (caffe_compat/budget.py)."""
    from ..budget import footprint, resolve

    need = footprint(graph, params)
    first = next(iter(graph.inputs.values()), None)
    batch = first[0] if first else 1
    copies = 3 if training else 2  # blob data, its diff or the engine's copy, backward's record
    total = need.values(batch, copies) + need.params * (2 if training else 1)
    resolve().require(total, f"the net {graph.name or ''}".rstrip(), path=graph.path)


class Net:
    """A Caffe net: ``Net(prototxt, caffe.TEST, weights=caffemodel)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        network_file, phase, level, stages, weights = _parse_init(args, kwargs)
        _check_file(network_file)
        if weights is not None:
            _check_file(weights)
        state = NetState.make(caffe_pb2.Phase.Name(phase), stages, level)
        param, lines = _read_net(network_file)
        self._build(param, state, network_file, lines, weights=weights)

    @classmethod
    def _from_param(
        cls,
        param: caffe_pb2.NetParameter,
        state: NetState,
        path: str | None,
        *,
        fed: Mapping[str, tuple[int, ...]] | None = None,
        seed: int | None = None,
    ) -> Net:
        """A net from a NetParameter already upgraded to V2 (what a solver builds). ``fed``:
        the shapes of the data tops a solver feeds (its readers, not the net's, fill them);
        ``seed`` seeds the fillers and generator (the solver's ``random_seed``)."""
        net = cls.__new__(cls)
        net._build(param, state, path, {}, fed=fed, seed=seed)
        return net

    def _build(
        self,
        param: caffe_pb2.NetParameter,
        state: NetState,
        path: str | None,
        lines: Mapping[str, int],
        *,
        fed: Mapping[str, tuple[int, ...]] | None = None,
        weights: str | None = None,
        seed: int | None = None,
    ) -> None:
        with users_exceptions():  # a Python layer's own exception reaches the caller, as in Caffe
            self._build_net(param, state, path, lines, fed=fed, weights=weights, seed=seed)

    def _build_net(
        self,
        param: caffe_pb2.NetParameter,
        state: NetState,
        path: str | None,
        lines: Mapping[str, int],
        *,
        fed: Mapping[str, tuple[int, ...]] | None = None,
        weights: str | None = None,
        seed: int | None = None,
    ) -> None:
        training = needs_training(param, state)
        self.force_backward = bool(param.force_backward)
        sources = {}
        if training and fed is None:
            source_seed = net_seed() if seed is None else seed
            sources = _data.batch_sources(param, state, path, source_seed)
        shapes: dict[str, tuple[int, ...]] = dict(fed or {})
        for source in sources.values():
            shapes.update(source.top_shapes())

        def build(strict: bool = True) -> tuple[Graph, Inference]:
            graph = build_graph(
                param, state=state, input_shapes=shapes, path=path, lines=lines, training=training
            )
            return graph, infer_shapes(graph, strict=strict)

        try:
            graph, inference = build()
        except NetDefinitionError:
            if not settle_by_shapes(param, lambda: build(strict=False)):
                raise
            graph, inference = build()
        registry.preflight(graph, ["torch"])
        _check_memory(graph, inference.params, training)
        self._training = training
        self._setup(param, graph, inference.params, state, training)
        written: set[int] = set()
        if weights is not None:
            written = copy_trained_layers(self._layer_names, self._params, read_weights(weights))
        self._init_params(written, seed)
        if training:
            self._init_training(param, sources)
            if seed is not None:
                self._engine.reseed(seed)

    def _init_params(self, written: set[int], seed: int | None = None) -> None:
        """Caffe's fillers for every layer the weights file did not write."""
        rng = filler_rng() if seed is None else np.random.default_rng(seed)
        filled: set[int] = set()  # buffers: a shared parameter keeps its owner's values
        for index, layer in enumerate(self._layout.layers):
            blobs = self._params[index]
            node = self._nodes[index]
            if (
                node is not None
                and node.state is not None
                and registry.facts(node.type).user_instance
            ):
                filled.update(id(b._buf) for b in blobs)
                continue  # a Python layer's blobs hold what its setup wrote, as in Caffe
            if index not in written and blobs:
                keep = {j for j, b in enumerate(blobs) if id(b._buf) in filled}
                fill_blobs(layer.param, blobs, rng, keep)
            filled.update(id(b._buf) for b in blobs)

    def _setup(
        self, net, graph, param_shapes: Mapping, state: NetState, training: bool = False
    ) -> None:
        self._name = net.name
        self._graph = graph
        self._state = state
        self._layout = build_layout(net, state, graph.path, training=training)
        by_name: dict[str, list] = {}  # Caffe's layer name -> its nodes in order (names repeat)
        for node in graph.nodes:
            by_name.setdefault(node.param.name or node.name, []).append(node)
        nodes = []
        self._params: list[list[Blob]] = []
        self._layers: list[Layer] = []
        owners: dict[str, tuple[str, Blob]] = {}  # named ParamSpecs: the first layer owns them
        for layer in self._layout.layers:
            same = by_name.get(layer.name) if layer.kind == NODE else None
            node = same.pop(0) if same else None
            if layer.kind == NODE and node is None:
                raise NetDefinitionError("no computation for this layer", layer=layer.name)
            nodes.append(node)
            shapes = param_shapes.get(node.name, []) if node is not None else []
            # A Python layer's own blobs (setup's add_blob) are its parameters: the user's
            # instance keeps the very list, and is what net.layers holds for it.
            user = (
                node.state if node is not None and registry.facts(node.type).user_instance else None
            )
            blobs = user.blobs if user is not None else []
            for j, shape in enumerate(shapes):
                spec = layer.param.param[j] if j < len(layer.param.param) else None
                if spec is not None and spec.name in owners:
                    owner_layer, owner = owners[spec.name]
                    shared = share_param(owner, owner_layer, tuple(shape), spec, layer.name)
                    if user is not None:
                        blobs[j] = shared
                    else:
                        blobs.append(shared)
                    continue
                if user is None:
                    blobs.append(Blob(tuple(shape)))
                if spec is not None and spec.name:
                    owners[spec.name] = (layer.name, blobs[j])
            self._params.append(blobs)
            if user is not None:
                self._layers.append(user)
                continue
            record = Layer(layer.param)
            record.blobs = blobs
            self._layers.append(record)
        self._nodes = nodes
        self._blobs = [Blob() for _ in self._layout.blob_names]
        self._apply_shapes(initial=True)
        self._engine = Engine(graph, self._layout, self._blobs, self._params, nodes)

    def _init_training(self, param: caffe_pb2.NetParameter, sources: Mapping) -> None:
        """Caffe's backward decisions per layer, the data layers' tops, the loss tops' diffs."""
        engine = self._engine
        engine.bind = True
        engine.seed = net_seed()
        graph = self._graph
        node_index = {node.name: i for i, node in enumerate(graph.nodes)}
        counts = [0] * len(graph.nodes)
        for li, node in enumerate(self._nodes):
            if node is not None:
                counts[node_index[node.name]] = len(self._params[li])
        plan = plan_backward(graph, counts, force_backward=self.force_backward)
        refused = {(node.name, j): reason for node, j, reason in plan.refusals}
        needed: set[int] = set()  # blob ids whose diff a later layer reads
        needs = engine.needs
        for li in range(len(self._layout.layers) - 1, -1, -1):
            layer = self._layout.layers[li]
            if layer.kind == NODE:
                name = self._nodes[li].name  # the graph's name: repeated Caffe names are apart
                k = node_index[name]
                reason = next(
                    (refused[(name, j)] for j in range(len(layer.bottoms))
                     if (name, j) in refused),
                    None,
                )  # fmt: skip
                params = list(plan.params[k])
                if registry.facts(layer.type).statistics:  # running sums: never a diff
                    params = [False] * len(params)
                needs[li] = Needs(plan.layer[k], list(plan.bottoms[k]), params, reason)
            elif layer.kind == SPLIT:
                tops = self._layout.top_ids[li]
                wanted = any(t in needed for t in tops)
                needs[li] = Needs(wanted, [wanted], [])
            for j, blob in enumerate(self._layout.bottom_ids[li]):
                if needs[li].layer and j < len(needs[li].bottoms) and needs[li].bottoms[j]:
                    needed.add(blob)
        for li, layer in enumerate(self._layout.layers):
            if layer.kind == DATA:
                provider = _data.provider(self, li, layer.param, sources.get(layer.name))
                if provider is not None:
                    engine.data[li] = provider
        for blob, weight in zip(self._blobs, self._layout.loss_weights):
            if weight:
                blob.diff[...] = weight  # Layer::SetLossWeights: a loss top's diff is its weight

    # --- shapes ---------------------------------------------------------------------------------

    def _apply_shapes(self, initial: bool = False) -> None:
        """Give every blob the shape Caffe's Reshape pass computes (inputs keep theirs)."""
        graph = self._graph
        shapes: dict[str, tuple[int, ...]] = {}
        for layer, node in zip(self._layout.layers, self._nodes):
            if layer.kind in (INPUT, DATA):
                for top in layer.tops:
                    shapes[top] = tuple(graph.inputs[top])
            elif layer.kind == SPLIT:
                for top in layer.tops:
                    shapes[top] = shapes[layer.bottoms[0]]
            else:
                for top, value in zip(layer.tops, node.outputs):
                    shapes[top] = tuple(graph.shapes[value])
        inputs = {self._layout.blob_names[i] for i in self._layout.input_ids}
        for name, blob in zip(self._layout.blob_names, self._blobs):
            if initial or name not in inputs:
                blob._sync()
                blob._set_shape(shapes[name])
        self._shaped_for = {name: tuple(graph.inputs[name]) for name in inputs}

    def reshape(self) -> None:
        """Carry the input blobs' current shapes through the net (Caffe's Net::Reshape)."""
        with users_exceptions():
            self._reshape()

    def _reshape(self) -> None:
        graph = self._graph
        wanted = {name: self.blobs[name].shape for name in self.inputs}
        before = dict(graph.inputs)
        graph.inputs.update(wanted)
        try:
            inference = infer_shapes(graph, strict=True)
            for layer, node, blobs in zip(self._layout.layers, self._nodes, self._params):
                expected = [tuple(s) for s in inference.params.get(node.name, [])] if node else []
                held = [b.shape for b in blobs]
                if blobs and expected != held:
                    raise NetDefinitionError(
                        f"input shape(s) {wanted} need parameter shapes {expected}, "
                        f"the layer holds {held}",
                        path=graph.path,
                        layer=layer.name,
                        layer_type=layer.type,
                    )
        except CaffeCompatError:
            graph.inputs.clear()
            graph.inputs.update(before)
            infer_shapes(graph, strict=True)
            raise
        self._apply_shapes()

    def _ensure_shapes(self) -> None:
        current = {name: self.blobs[name].shape for name in self.inputs}
        if current != self._shaped_for:
            self.reshape()

    # --- what pycaffe exposes -------------------------------------------------------------------

    @property
    def _blob_names(self) -> list[str]:
        return list(self._layout.blob_names)

    @property
    def _layer_names(self) -> list[str]:
        return [layer.name for layer in self._layout.layers]

    @property
    def layers(self) -> list[Layer]:
        return self._layers

    @property
    def _inputs(self) -> list[int]:
        return list(self._layout.input_ids)

    @property
    def _outputs(self) -> list[int]:
        return list(self._layout.output_ids)

    @property
    def _blob_loss_weights(self) -> list[float]:
        return list(self._layout.loss_weights)

    def _top_ids(self, index: int) -> list[int]:
        return list(self._layout.top_ids[index])

    def _bottom_ids(self, index: int) -> list[int]:
        return list(self._layout.bottom_ids[index])

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self.__dict__:
            self.__dict__[key] = make()
        return self.__dict__[key]

    @property
    def blobs(self) -> OrderedDict[str, Blob]:
        """Blobs by name, from input to output."""
        return self._cached("_blobs_dict", lambda: OrderedDict(zip(self._blob_names, self._blobs)))

    @property
    def blob_loss_weights(self) -> OrderedDict[str, float]:
        return self._cached(
            "_blob_loss_weights_dict",
            lambda: OrderedDict(zip(self._blob_names, self._blob_loss_weights)),
        )

    @property
    def layer_dict(self) -> OrderedDict[str, Layer]:
        return self._cached("_layer_dict", lambda: OrderedDict(zip(self._layer_names, self.layers)))

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        """Parameter blobs (weights, biases, ...) of every layer that has some."""
        return self._cached(
            "_params_dict",
            lambda: OrderedDict(
                (name, layer.blobs)
                for name, layer in zip(self._layer_names, self.layers)
                if len(layer.blobs) > 0
            ),
        )

    @property
    def inputs(self) -> list[str]:
        return self._cached("_input_list", lambda: [self._blob_names[i] for i in self._inputs])

    @property
    def outputs(self) -> list[str]:
        return self._cached("_output_list", lambda: [self._blob_names[i] for i in self._outputs])

    def _names_by_layer(self, ids: Callable[[int], list[int]]) -> OrderedDict[str, list[str]]:
        names = self._blob_names
        return OrderedDict(
            (layer, [names[j] for j in ids(i)]) for i, layer in enumerate(self._layer_names)
        )

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        return self._cached("_top_names", lambda: self._names_by_layer(self._top_ids))

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        return self._cached("_bottom_names", lambda: self._names_by_layer(self._bottom_ids))

    # --- forward --------------------------------------------------------------------------------

    def _forward(self, start: int, end: int) -> float:
        """Run layers ``start`` to ``end`` inclusive (Caffe's ForwardFromTo); returns the loss."""
        if start < 0 or end >= len(self._layers):
            raise IndexError(
                f"layers {start} to {end} are out of range: the net has {len(self._layers)} layers"
            )
        with users_exceptions():
            self._ensure_shapes()
            self._engine.run(start, end)
        loss = 0.0
        for li in range(start, end + 1):
            for blob_id in self._layout.top_ids[li]:
                weight = self._layout.loss_weights[blob_id]
                if weight and self._layout.producers[blob_id] == li:
                    blob = self._blobs[blob_id]
                    blob._sync()  # a device's result comes to the host
                    loss += weight * float(blob._view().sum(dtype=np.float64))
        return float(np.float32(loss))

    def forward(
        self,
        blobs: list[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        **kwargs: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Forward pass; returns the output blobs (and ``blobs``) by name, as views of the blobs.

        ``kwargs`` set input blobs (same batch size); ``start``/``end`` name the first and last
        (inclusive) layers to run; with ``end`` the tops of that layer are returned.
        """
        if blobs is None:
            blobs = []
        start_ind = self._layer_names.index(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_names.index(end)
            outputs = set(self.top_names[end] + blobs)
        else:
            end_ind = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs.keys()) != set(self.inputs):
                raise Exception("Input blob arguments do not match net inputs.")
            for name, value in kwargs.items():
                if value.shape[0] != self.blobs[name].shape[0]:
                    raise Exception("Input is not batch sized")
                self.blobs[name].data[...] = value
        self._forward(start_ind, end_ind)
        return {name: self.blobs[name].data for name in outputs}

    def _batch(self, blobs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Split inputs into batches of the net's batch size; the last one is zero-padded."""
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self.blobs.values())).shape[0]
        remainder = num % batch_size
        for b in range(num // batch_size):
            i = b * batch_size
            yield {name: blobs[name][i : i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                padding = np.zeros((batch_size - remainder, *blobs[name].shape[1:]))
                padded[name] = np.concatenate([blobs[name][-remainder:], padding])
            yield padded

    def forward_all(self, blobs: list[str] | None = None, **kwargs: np.ndarray) -> dict:
        """Forward any number of inputs in batches; returns stacked copies, padding dropped."""
        all_outs: dict[str, Any] = {out: [] for out in set(self.outputs + (blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, out_blob in outs.items():
                all_outs[out].extend(out_blob.copy())
        for out in all_outs:
            all_outs[out] = np.asarray(all_outs[out])
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            for out in all_outs:
                all_outs[out] = all_outs[out][:-pad]
        return all_outs

    def before_forward(self, callback: Callable[[int], Any]) -> None:
        self._engine.before.append(callback)

    def after_forward(self, callback: Callable[[int], Any]) -> None:
        self._engine.after.append(callback)

    # --- backward -------------------------------------------------------------------------------

    def _backward(self, start: int, end: int) -> None:
        """Run layers ``start`` down to ``end`` backward (Caffe's BackwardFromTo)."""
        if end < 0 or start >= len(self._layers):
            raise IndexError(
                f"layers {start} to {end} are out of range: the net has {len(self._layers)} layers"
            )
        with users_exceptions():
            self._engine.backward(start, end)

    def backward(
        self,
        diffs: list[str] | None = None,
        start: str | None = None,
        end: str | None = None,
        **kwargs: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """Backward pass; returns the diffs of the inputs (and ``diffs``) by name.

        ``kwargs`` set the diffs of output blobs (same batch size); otherwise the tops' diffs
        are what the loss layers set (their loss weights) or what was written to them.
        ``start``/``end`` name the first and last (inclusive) layers, from the top down.
        """
        if diffs is None:
            diffs = []
        start_ind = self._layer_names.index(start) if start is not None else len(self.layers) - 1
        if end is not None:
            end_ind = self._layer_names.index(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs.keys()) != set(self.outputs):
                raise Exception("Top diff arguments do not match net outputs.")
            for top, diff in kwargs.items():
                if diff.shape[0] != self.blobs[top].shape[0]:
                    raise Exception("Diff is not batch sized")
                self.blobs[top].diff[...] = diff
        self._backward(start_ind, end_ind)
        return {name: self.blobs[name].diff for name in outputs}

    def forward_backward_all(
        self, blobs: list[str] | None = None, diffs: list[str] | None = None, **kwargs: np.ndarray
    ) -> tuple[dict, dict]:
        """Forward and backward in batches; returns (blobs, diffs) stacked, padding dropped."""
        all_outs: dict[str, Any] = {out: [] for out in set(self.outputs + (blobs or []))}
        all_diffs: dict[str, Any] = {diff: [] for diff in set(self.inputs + (diffs or []))}
        forward_batches = self._batch({n: kwargs[n] for n in self.inputs if n in kwargs})
        backward_batches = self._batch({n: kwargs[n] for n in self.outputs if n in kwargs})
        for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
            batch_blobs = self.forward(blobs=blobs, **fb)
            batch_diffs = self.backward(diffs=diffs, **bb)
            for out, values in batch_blobs.items():
                all_outs[out].extend(values.copy())
            for diff, values in batch_diffs.items():
                all_diffs[diff].extend(values.copy())
        for out, diff in zip(all_outs, all_diffs):
            all_outs[out] = np.asarray(all_outs[out])
            all_diffs[diff] = np.asarray(all_diffs[diff])
        pad = len(next(iter(all_outs.values()))) - len(next(iter(kwargs.values())))
        if pad:
            for out, diff in zip(all_outs, all_diffs):
                all_outs[out] = all_outs[out][:-pad]
                all_diffs[diff] = all_diffs[diff][:-pad]
        return all_outs, all_diffs

    def before_backward(self, callback: Callable[[int], Any]) -> None:
        self._engine.before_backward.append(callback)

    def after_backward(self, callback: Callable[[int], Any]) -> None:
        self._engine.after_backward.append(callback)

    def clear_param_diffs(self) -> None:
        """Zero every parameter diff (Caffe's ClearParamDiffs)."""
        for blobs in self._params:
            for blob in blobs:
                blob.diff[...] = 0.0

    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Give the MemoryData layer (the first layer) its arrays; 1-D labels become Nx1x1x1."""
        if labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        return self._set_input_arrays(data, labels)

    def _set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        _data.set_input_arrays(self, data, labels)

    # --- weights --------------------------------------------------------------------------------

    def copy_from(self, filename: str | os.PathLike[str]) -> None:
        """Load weights by layer name (binary caffemodel V1/V2 or HDF5), as Caffe does."""
        written = copy_trained_layers(self._layer_names, self._params, read_weights(filename))
        for index in written:
            self._engine.invalidate(index)

    load_hdf5 = copy_from

    def share_with(self, other: Net) -> None:
        """Use ``other``'s parameter blobs for the layers both nets have (shared memory)."""
        self._share_trained_layers(other)

    def _share_trained_layers(self, other: Net) -> None:
        """Caffe's ShareTrainedLayersWith: each layer of ``other`` with blobs lends them to the
        layer of this net with its name (counts and shapes must agree); already shared, no-op."""
        where = {name: i for i, name in enumerate(self._layer_names)}
        for name, source in zip(other._layer_names, other.layers):
            index = where.get(name)
            if index is None or not source.blobs:
                continue
            targets = self._params[index]
            if all(mine is theirs for mine, theirs in zip(targets, source.blobs)) and len(
                targets
            ) == len(source.blobs):
                continue
            if len(targets) != len(source.blobs):
                raise CaffeCompatError(f"Incompatible number of blobs for layer {name}")
            for j, (mine, theirs) in enumerate(zip(targets, source.blobs)):
                if mine.shape != theirs.shape:
                    raise CaffeCompatError(
                        f"Cannot share param {j} weights from layer '{name}'; shape mismatch. "
                        f"Source param shape is {list(theirs.shape)}; target param shape is "
                        f"{list(mine.shape)}"
                    )
            for j, theirs in enumerate(source.blobs):
                targets[j] = theirs
                self._engine.watch(index, j, theirs)
            self._engine.invalidate(index)

    def _to_proto(self) -> tuple[caffe_pb2.NetParameter, dict[str, list[np.ndarray]]]:
        net = caffe_pb2.NetParameter(name=self._name)
        blobs: dict[str, list[np.ndarray]] = {}
        for layer, params in zip(self._layout.layers, self._params):
            net.layer.add().CopyFrom(layer.param)
            if params:
                for blob in params:
                    blob._sync()
                blobs[layer.name] = [blob._view() for blob in params]
        return net, blobs

    def save(self, filename: str | os.PathLike[str]) -> None:
        """Write the net's layers and weights as a binary V2 caffemodel (what Caffe writes)."""
        net, blobs = self._to_proto()
        write_caffemodel(filename, net, blobs)

    def save_hdf5(self, filename: str | os.PathLike[str]) -> None:
        """Write the weights in Caffe's HDF5 layout."""
        write_hdf5(filename, self._to_proto()[1])

    def __repr__(self) -> str:
        return f"<caffe Net {self._name!r}: {len(self._layers)} layers, inputs {self.inputs}>"
