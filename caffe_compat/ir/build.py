"""NetParameter (already upgraded to V2) -> Graph: phase filtering, inputs, SSA wiring.

Data layers become declared inputs, training-only layers drop out, and in-place tops become
distinct values (see graph.py for the naming rule). A net built for training (``training=True``)
is the net Caffe's ``Net::Init`` builds: every top of a data layer is an input (labels too),
losses, Accuracy and Silence stay, and a loss layer that names no top gets Caffe's anonymous
one (``AutoTopBlobs``), a value no other layer can read.

Layer names: Caffe's Net checks none (``Net::Init`` only lists them), so train/val nets reuse
names among layers that never run together (BVLC's mnist_autoencoder has two "loss" layers) and
published deploy nets repeat them among layers that do (HED's "crop", SSDLite's "slice"). Every
node here needs its own name (back ends and value names refer to nodes by it), so a repeated
name gets ``_1``, ``_2``... on the later nodes, OpenCV's names for them (:func:`unique_name`);
``node.param.name`` keeps Caffe's. Weights attach by name, and Caffe's
``CopyTrainedLayersFrom`` gives a caffemodel's blobs of a name to the FIRST layer bearing it
(``CopyTrainedLayersFromHDF5``: the last), leaving the others at their fillers: ``infer.py``
refuses a repeated name where any of its layers has parameters, and accepts it where none has
(nothing to attach).
"""

from __future__ import annotations

from collections.abc import Mapping

from .. import registry
from ..errors import NetDefinitionError, Remedy
from ..proto import caffe_pb2
from .graph import Graph, Node, Shape
from .phase import NetState, layer_included
from .validate import check_input_shape, validate_net

AUTOMATIC = "(automatic)"  # Caffe's name for the top it adds to a loss layer that has none


def _check_loss_weights(
    layer: caffe_pb2.LayerParameter, tops: int, is_loss: bool, where: dict
) -> None:
    """Caffe's ``SetLossWeights``: none, or one per top (a loss layer's default counts as one)."""
    given = len(layer.loss_weight) or (1 if is_loss else 0)
    if given and given != tops:
        raise NetDefinitionError(
            f"loss_weight must be unspecified or specified once per top blob ({given} "
            f"weight(s) for {tops} top(s))",
            **where,
        )


def unique_name(name: str, taken: set[str], reserved: set[str]) -> str:
    """``name``, or ``name_1``, ``name_2``... for its later bearers, as OpenCV's Caffe importer
    names them (so ``dnn``'s layer names match OpenCV 4's); never a name another layer of the
    net has."""
    if name not in taken:
        return name
    count = 1
    while f"{name}_{count}" in taken or f"{name}_{count}" in reserved:
        count += 1
    return f"{name}_{count}"


def _stages(net: caffe_pb2.NetParameter) -> list[str]:
    """Every stage a layer rule of ``net`` names, in order of appearance."""
    found: dict[str, None] = {}
    for layer in net.layer:
        for rule in [*layer.include, *layer.exclude]:
            found.update(dict.fromkeys([*rule.stage, *rule.not_stage]))
    return list(found)


def build_graph(
    net: caffe_pb2.NetParameter,
    *,
    state: NetState | None = None,
    input_shapes: Mapping[str, Shape] | None = None,
    path: str | None = None,
    lines: Mapping[str, int] | None = None,
    training: bool = False,
) -> Graph:
    """Wire a V2 net into a Graph for ``state`` (TEST phase by default); ``training`` keeps what
    Caffe's training net holds (see the module docstring).

    When wiring fails in a net with stage rules, the error names the net's stages: the layers
    of another stage are a likely cause."""
    state = state or NetState()
    try:
        return _build(net, state, input_shapes, path, lines, training)
    except NetDefinitionError as exc:
        stages = _stages(net)
        if not stages or exc.remedy is not None:
            raise
        chosen = ", ".join(sorted(state.stages)) or "none"
        raise NetDefinitionError(
            f"{exc.reason} (this net has stage rules: stages {', '.join(stages)}; phase "
            f"{state.phase}, stages selected: {chosen})",
            path=exc.path,
            layer=exc.layer,
            layer_type=exc.layer_type,
            blob=exc.blob,
            line=exc.line,
            remedy=Remedy("stages", purpose="to build the net of one stage"),
        ) from None


def _fed_source(
    layer: caffe_pb2.LayerParameter, overrides: Mapping[str, Shape], training: bool
) -> bool:
    """A data source an inference graph feeds instead of running (a Python data layer)."""
    feedable = registry.facts(layer.type).feedable
    return not training and feedable is not None and bool(feedable(layer, overrides))


def _build(
    net: caffe_pb2.NetParameter,
    state: NetState,
    input_shapes: Mapping[str, Shape] | None,
    path: str | None,
    lines: Mapping[str, int] | None,
    training: bool = False,
) -> Graph:
    overrides = dict(input_shapes or {})
    lines = lines or {}
    validate_net(net, state, path=path, lines=lines, training=training)
    graph = Graph(name=net.name, inputs={}, nodes=[], outputs=[], path=path, training=training)
    anonymous: set[str] = set()  # temporary ids of Caffe's automatic loss tops
    declared: dict[str, Shape | None] = {}
    current: dict[str, str] = {}  # blob -> its latest value
    versions: dict[str, list[str]] = {}  # blob -> temporary value ids in order
    producer_of: dict[str, str] = {}  # temporary value id -> producing layer name
    taken: set[str] = set()  # node names given so far
    reserved = {layer.name for layer in net.layer}

    def new_version(blob: str, layer: str) -> str:
        tmp = f"{blob}\x00{len(versions.get(blob, []))}"
        versions.setdefault(blob, []).append(tmp)
        producer_of[tmp] = layer
        current[blob] = tmp
        return tmp

    def add_input(blob: str, shape: Shape | None, layer: caffe_pb2.LayerParameter) -> None:
        if blob in current:
            raise NetDefinitionError(f'input blob "{blob}" is declared twice', layer=layer.name)
        new_version(blob, "")
        declared[blob] = overrides.pop(blob, shape)
        check_input_shape(declared[blob], blob, layer, path)

    for layer in net.layer:
        if not layer_included(state, layer):
            continue
        where = {"layer": layer.name, "layer_type": layer.type, "path": path}
        info = registry.facts(layer.type)
        if info.role == "input":
            for blob, shape in zip(layer.top, info.data_shape(layer, graph.notes)):
                add_input(blob, shape, layer)
            continue
        if info.role == "data":
            if training:
                shapes = info.data_shape(layer, graph.notes, labels=True)
            else:
                shapes = info.data_shape(layer, graph.notes)
            for i, (blob, shape) in enumerate(zip(layer.top, shapes)):
                if i == 0 or shape is not None or training:
                    add_input(blob, shape, layer)
                    if training:
                        graph.sources[blob] = layer.name
                else:
                    graph.notes.append(f'"{blob}" of "{layer.name}" (labels) is not an input')
            graph.dropped.append((layer.name, layer.type))
            continue
        if info.role == "training" and not training:
            graph.dropped.append((layer.name, layer.type))
            continue
        if _fed_source(layer, overrides, training):
            # A Python data layer (FCN's voc_layers...): its first top is an input, as a Data
            # layer's is; another top only when --input-shape names it.
            for i, blob in enumerate(layer.top):
                if i == 0 or blob in overrides:
                    add_input(blob, None, layer)
                else:
                    graph.notes.append(f'"{blob}" of "{layer.name}" is not an input')
            graph.dropped.append((layer.name, layer.type))
            continue
        inputs = []
        for blob in layer.bottom:
            if blob not in current:
                raise NetDefinitionError(
                    f'bottom "{blob}" is not produced by any earlier layer or input', **where
                )
            inputs.append(current[blob])
        node_name = unique_name(layer.name, taken, reserved)
        taken.add(node_name)
        outputs = [new_version(blob, node_name) for blob in layer.top]
        if len(set(layer.top)) != len(layer.top):
            raise NetDefinitionError("a layer lists the same top twice", **where)
        if training and info.loss and not layer.top:
            outputs.append(new_version(AUTOMATIC, layer.name))
            anonymous.add(outputs[-1])
            current.pop(AUTOMATIC)  # Caffe makes it unreachable as a bottom
        if training:
            _check_loss_weights(layer, len(outputs), info.loss, where)
        param = caffe_pb2.LayerParameter()
        param.CopyFrom(layer)
        if not param.HasField("phase"):  # layers inherit the net's phase, as in Caffe's Net::Init
            param.phase = caffe_pb2.Phase.Value(state.phase)
        graph.nodes.append(
            Node(node_name, layer.type, param, inputs, outputs, line=lines.get(layer.name))
        )
    if overrides:
        raise NetDefinitionError(f"no input named {', '.join(sorted(overrides))} in this net")

    # Final names: inputs keep plain names; otherwise the last version of a blob does.
    rename: dict[str, str] = {}
    for blob, ids in versions.items():
        pinned = producer_of[ids[0]] == ""
        for i, tmp in enumerate(ids):
            plain = (i == 0) if pinned else (i == len(ids) - 1)
            rename[tmp] = blob if plain else f"{blob}@{producer_of[tmp]}"
            graph.blob_of[rename[tmp]] = blob
        graph.final[blob] = rename[ids[-1]]
    for node in graph.nodes:
        node.inputs = [rename[v] for v in node.inputs]
        node.outputs = [rename[v] for v in node.outputs]
    for blob, shape in declared.items():
        graph.inputs[blob] = shape  # type: ignore[assignment]  # None until checked by infer
    consumed = {v for node in graph.nodes for v in node.inputs}
    unnamed = {rename[v] for v in anonymous}
    graph.outputs = [
        value
        for node in graph.nodes
        for value in node.outputs
        if value not in consumed
        and value not in unnamed
        and graph.final.get(graph.blob_of[value]) == value
    ]
    for value in unnamed:
        graph.final.pop(graph.blob_of[value], None)
    if not graph.nodes:
        left_out = sum(not layer_included(state, layer) for layer in net.layer)
        hint = (
            f" ({left_out} layer(s) belong to other phases or stages: choose with "
            "--phase/--stage/--level, phase=/stages=/level= in Python)"
            if left_out
            else ""
        )
        raise NetDefinitionError(f"no layers left in phase {state.phase}{hint}", path=path)
    return graph
