"""``TrainNet``: a Caffe net built for training, run forward and backward on the PyTorch back end
with Caffe's semantics.

- The net is the one Caffe's ``Net::Init`` builds for the state (phase, stages, level): data
  layers' tops are inputs (labels too), losses, Accuracy and Silence compute, DummyData refills
  its tops on every forward (a constant filler once), and a loss layer without a top gets
  Caffe's anonymous one.
- Parameters are Caffe's ``learnable_params_``: one ``Param`` per blob, a blob shared through
  ``param { name: }`` once (owned by the first layer naming it), with its ``lr_mult`` and
  ``decay_mult``; BatchNorm's statistics are there too with lr_mult 0 (Caffe forces it), so a
  solver's history lines up with Caffe's solverstates. Blobs start from the layers' fillers or
  are copied from a weights file by layer name (``CopyTrainedLayersFrom``).
- ``backward`` computes exactly the diffs Caffe computes (ir/backward.py: lr_mult 0,
  propagate_down, force_backward, layers feeding no loss); parameter diffs accumulate across
  calls until ``clear_param_diffs``, bottom diffs are overwritten. Each layer's gradient is
  Caffe's (the PyTorch modules use custom autograd functions where autograd's would differ), and
  the float64 reference's backward (caffe_compat.reference.backward) is the judge in the tests.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import registry
from ..errors import CaffeCompatError, NetDefinitionError, WeightsMismatchError
from ..io import read_weights
from ..io.prototxt import parse_text, read_text
from ..io.upgrade import upgrade_net
from ..io.weights import Weights
from ..ir.backward import BackwardPlan, lr_mults, param_owners, plan_backward
from ..ir.build import build_graph
from ..ir.graph import Graph, Node, Shape
from ..ir.infer import infer_shapes
from ..ir.load import settle_named
from ..ir.phase import NetState
from ..proto import caffe_pb2
from ._fill import DrawnTops, initial_blobs


class Param:
    """One learnable blob: ``data`` and ``diff`` (float32 tensors on the net's device, in the
    blob's Caffe shape), the solver's multipliers, and the (layer, index) that owns it."""

    def __init__(
        self, tensor: torch.Tensor, owner: tuple[str, int], lr_mult: float, decay_mult: float
    ) -> None:
        self.tensor = tensor  # an nn.Parameter when Caffe computes its diff, else a plain tensor
        self.owner = owner
        self.lr_mult = lr_mult
        self.decay_mult = decay_mult
        self._diff: torch.Tensor | None = None
        self._given = (False, False)  # whether lr_mult and decay_mult were set (Caffe's has_*)

    @property
    def name(self) -> str:
        return f"{self.owner[0]}/{self.owner[1]}"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape)

    @property
    def data(self) -> torch.Tensor:
        """The values (a view: in-place changes reach the net)."""
        return self.tensor.detach()

    @data.setter
    def data(self, value: Any) -> None:
        with torch.no_grad():
            self.tensor.copy_(torch.as_tensor(value).reshape(self.tensor.shape))

    @property
    def diff(self) -> torch.Tensor:
        """The accumulated gradient (a view: zeros until a backward writes it)."""
        if not self.tensor.requires_grad:
            if self._diff is None:
                self._diff = torch.zeros_like(self.tensor)
            return self._diff
        if self.tensor.grad is None:
            self.tensor.grad = torch.zeros_like(self.tensor)
        return self.tensor.grad

    @diff.setter
    def diff(self, value: Any) -> None:
        self.diff.copy_(torch.as_tensor(value).reshape(self.tensor.shape))

    def __repr__(self) -> str:
        return f"Param({self.name}, shape={list(self.shape)}, lr_mult={self.lr_mult:g})"


@dataclass
class Blob:
    """A blob of ``TrainNet.blobs``: its data after the last forward and its diff after the last
    backward (zeros where Caffe computes none)."""

    name: str
    data: torch.Tensor
    diff: torch.Tensor


def _net_param(net: Any) -> tuple[caffe_pb2.NetParameter, str, dict[str, int]]:
    if isinstance(net, caffe_pb2.NetParameter):
        copy = caffe_pb2.NetParameter()
        copy.CopyFrom(net)
        upgrade_net(copy)
        settle_named(copy, None)  # the forks' meanings, as load_net settles them
        return copy, "<NetParameter>", {}
    path = os.fspath(net)
    param = caffe_pb2.NetParameter()
    index = parse_text(read_text(path), param, path=path)
    upgrade_net(param, path=path)
    settle_named(param, path)
    return param, path, {name: line for line, name in index.starts if name}


class TrainNet:
    """A net built for training (see the module docstring).

    ``net``: a prototxt path or a NetParameter; ``phase`` TRAIN or TEST; ``stages`` and
    ``level`` (default: the NetParameter's ``state``); ``weights``: a caffemodel or HDF5 file (or
    read ``Weights``) to copy by layer name; ``input_shapes`` for data tops the definition does not
    size; ``seed`` for the fillers, DummyData and Dropout; ``device`` "cpu" or "cuda";
    ``keep_diffs``: keep every blob's diff after a backward (``blobs[name].diff``, as pycaffe
    shows them); off, only parameter diffs are kept, which a solver needs alone and saves a copy
    per blob.
    """

    def __init__(
        self,
        net: str | os.PathLike[str] | caffe_pb2.NetParameter,
        *,
        phase: str = "TRAIN",
        stages: Iterable[str] | None = None,
        level: int | None = None,
        weights: str | os.PathLike[str] | Weights | None = None,
        input_shapes: Mapping[str, Shape] | None = None,
        device: str | torch.device = "cpu",
        seed: int | None = None,
        keep_diffs: bool = True,
    ) -> None:
        self.net_param, self.path, lines = _net_param(net)
        state = self.net_param.state
        self.state = NetState.make(
            phase,
            list(state.stage) if stages is None else stages,
            int(state.level) if level is None else level,
        )
        self.device = torch.device(device)
        self.keep_diffs = keep_diffs
        self.graph = build_graph(
            self.net_param,
            state=self.state,
            input_shapes=input_shapes,
            path=self.path,
            lines=lines,
            training=True,
        )
        self._param_shapes = infer_shapes(self.graph, strict=True).params
        self.force_backward = bool(self.net_param.force_backward)
        self._rng = np.random.default_rng(seed)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(self._rng.integers(2**62)))
        counts = [len(self._param_shapes.get(n.name, ())) for n in self.graph.nodes]
        self.plan: BackwardPlan = plan_backward(
            self.graph, counts, force_backward=self.force_backward
        )
        self._owners = param_owners(self.graph, counts)
        self._make_params(counts)
        if weights is not None:
            self.copy_trained_from(weights)
        self.module = nn.ModuleDict()
        self._keys: list[str] = []
        self._build_modules()
        self._dummy = DrawnTops.for_graph(self.graph, self.net_param, self.state)
        self.input_names = [v for v in self.graph.inputs if v not in self._dummy.tops]
        self._inputs: dict[str, torch.Tensor] = {}
        self._env: dict[str, torch.Tensor] = {}
        self._loss: torch.Tensor | None = None
        self._kept = self.plan.diffs | set(self.plan.loss_weights)  # values with a diff

    # --- parameters -----------------------------------------------------------------------------

    def _make_params(self, counts: list[int]) -> None:
        """Caffe's AppendParam: owners first appear in layer order; sharers are checked."""
        self.learnable_params: list[Param] = []
        self.params: dict[str, list[Param]] = {}
        by_owner: dict[tuple[str, int], Param] = {}
        computed = {  # owners whose diff some layer's backward writes
            self._owners[(n.name, j)]
            for i, n in enumerate(self.graph.nodes)
            for j, wanted in enumerate(self.plan.params[i])
            if wanted and not registry.facts(n.type).statistics
        }
        for node, count in zip(self.graph.nodes, counts):
            shapes = self._param_shapes.get(node.name, [])
            arrays = initial_blobs(node, shapes, self._rng)
            lrs = lr_mults(node, count)
            specs = node.param.param
            row = []
            for j in range(count):
                owner = self._owners[(node.name, j)]
                spec = specs[j] if j < len(specs) else caffe_pb2.ParamSpec()
                if owner == (node.name, j):
                    tensor = torch.from_numpy(np.array(arrays[j], dtype=np.float32))
                    tensor = tensor.to(self.device)
                    if owner in computed:
                        tensor = nn.Parameter(tensor)
                    param = Param(tensor, owner, lrs[j], float(spec.decay_mult))
                    param._given = (spec.HasField("lr_mult"), spec.HasField("decay_mult"))
                    by_owner[owner] = param
                    self.learnable_params.append(param)
                else:
                    param = by_owner[owner]
                    self._check_share(node, j, shapes[j], param, spec)
                row.append(param)
            self.params[node.name] = row

    def _check_share(
        self, node: Node, j: int, shape: Shape, owner: Param, spec: caffe_pb2.ParamSpec
    ) -> None:
        what = (
            f"Cannot share param '{spec.name}' owned by layer '{owner.owner[0]}' with layer "
            f"'{node.name}'"
        )
        where = {"path": self.path, "layer": node.name, "layer_type": node.type}
        if tuple(shape) != owner.shape:
            if spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE and np.prod(shape) == np.prod(
                owner.shape
            ):
                raise NetDefinitionError(
                    f"{what}: the training engine shares blobs of one shape only (PERMISSIVE "
                    f"sharing of {list(owner.shape)} as {list(shape)} is not supported)",
                    **where,
                )
            raise NetDefinitionError(
                f"{what}; shape mismatch. Owner layer param shape is {list(owner.shape)}; "
                f"sharing layer expects shape {list(shape)}",
                **where,
            )
        has_lr, has_decay = owner._given
        if spec.HasField("lr_mult"):
            if has_lr and spec.lr_mult != owner.lr_mult:
                raise NetDefinitionError(
                    f"Shared param '{spec.name}' has mismatched lr_mult.", **where
                )
            owner.lr_mult, has_lr = float(spec.lr_mult), True
        if spec.HasField("decay_mult"):
            if has_decay and spec.decay_mult != owner.decay_mult:
                raise NetDefinitionError(
                    f"Shared param '{spec.name}' has mismatched decay_mult.", **where
                )
            owner.decay_mult, has_decay = float(spec.decay_mult), True
        owner._given = (has_lr, has_decay)

    def copy_trained_from(self, weights: str | os.PathLike[str] | Weights) -> None:
        """Caffe's ``CopyTrainedLayersFrom``: each stored layer's blobs go to the first layer of
        that name; layers the net lacks are ignored, a count or shape that differs stops."""
        source = weights if isinstance(weights, Weights) else read_weights(weights)
        for name, arrays in source.blobs.items():
            targets = self.params.get(name)
            if targets is None:
                continue
            if len(targets) != len(arrays):
                raise WeightsMismatchError(
                    f"Incompatible number of blobs for layer {name}", path=source.path
                )
            shapes = self._param_shapes.get(name, [])
            for j, (array, shape) in enumerate(zip(arrays, shapes)):
                if not _fits(array.shape, tuple(shape)):
                    raise WeightsMismatchError(
                        f"Cannot copy param {j} weights from layer '{name}'; shape mismatch. "
                        f"Source param shape is {list(array.shape)}; target param shape is "
                        f"{list(shape)}. To learn this layer's parameters from scratch rather "
                        "than copying from a saved net, rename the layer.",
                        path=source.path,
                    )
            for param, array in zip(targets, arrays):
                param.data = torch.from_numpy(np.asarray(array, np.float32).reshape(param.shape))
        self._sync_graph()

    def share_trained_layers_with(self, other: TrainNet) -> None:
        """Caffe's ``ShareTrainedLayersWith``: each layer of ``other`` with blobs lends its data
        to the first layer of this net with that name (same count and shapes, else an error)."""
        for name, sources in other.params.items():
            targets = self.params.get(name)
            if targets is None or not sources:
                continue
            if len(targets) != len(sources):
                raise WeightsMismatchError(f"Incompatible number of blobs for layer {name}")
            for j, (target, source) in enumerate(zip(targets, sources)):
                if target.shape != source.shape:
                    raise WeightsMismatchError(
                        f"Cannot share param {j} weights from layer '{name}'; shape mismatch. "
                        f"Source param shape is {list(source.shape)}; target param shape is "
                        f"{list(target.shape)}"
                    )
                if target.tensor.requires_grad:
                    target.tensor = nn.Parameter(source.tensor.detach())
                else:
                    target.tensor = source.tensor.detach()
        self._build_modules()

    def _sync_graph(self) -> None:
        """The graph's nodes hold the current blobs as numpy (views on the CPU, copies else), for
        the converters and the float64 reference."""
        for node in self.graph.nodes:
            node.blobs = [p.tensor.detach().cpu().numpy() for p in self.params.get(node.name, [])]

    # --- modules --------------------------------------------------------------------------------

    def _build_modules(self) -> None:
        from ..converters.torch._base import TorchContext, bind_blobs
        from ..converters.torch.model import module_key

        self._sync_graph()
        registry.preflight(self.graph, ["torch"])
        self.module = nn.ModuleDict()
        self._keys = []
        for index, node in enumerate(self.graph.nodes):
            entry = registry.lookup(node.type, "torch")
            assert entry is not None  # preflight checked
            where = {"path": self.path, "layer": node.name, "layer_type": node.type}
            try:
                module = entry.fn(node, TorchContext(self.graph, node))
            except CaffeCompatError:
                raise
            except (ValueError, registry.Unsupported) as exc:
                raise CaffeCompatError(str(exc), **where) from None
            module = module.to(self.device)
            blobs = self.params.get(node.name, [])
            if blobs:
                tensors = [
                    p.tensor
                    if self.plan.params[index][j] or not p.tensor.requires_grad
                    else nn.Parameter(p.tensor.detach(), requires_grad=False)
                    for j, p in enumerate(blobs)
                ]
                try:
                    bind_blobs(module, tensors)
                except ValueError as exc:
                    raise CaffeCompatError(f"cannot train this layer: {exc}", **where) from None
            key = module_key(node.name)
            while key in self.module:
                key += "_"
            self.module[key] = module
            self._keys.append(key)
        self.module.train()
        self._dropouts = {
            node.name: self.module[key]
            for node, key in zip(self.graph.nodes, self._keys)
            if hasattr(self.module[key], "mask")
        }
        for module in self._dropouts.values():
            module.generator = self._generator  # masks follow the net's seed

    # --- forward and backward -------------------------------------------------------------------

    def _feed(self, feeds: Mapping[str, Any] | None) -> dict[str, torch.Tensor]:
        feeds = dict(feeds or {})
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise CaffeCompatError(
                f"no input named {', '.join(unknown)} (the net takes "
                f"{', '.join(self.input_names) or 'none'})",
                path=self.path,
            )
        for name in self.input_names:
            if name in feeds:
                value = torch.as_tensor(
                    np.asarray(feeds[name]) if not torch.is_tensor(feeds[name]) else feeds[name]
                )
                self._inputs[name] = value.to(self.device, torch.float32).clone()
            elif name not in self._inputs:
                raise CaffeCompatError(f"input {name!r} was never given", path=self.path)
        values = dict(self._inputs)
        values.update(self._dummy.fill(self._generator, self.device))
        self._reshape({n: tuple(v.shape) for n, v in values.items()})
        for name, tensor in values.items():
            if name in self.plan.diffs:
                values[name] = tensor.detach().requires_grad_(True)
        return values

    def _reshape(self, shapes: dict[str, Shape]) -> None:
        """Caffe reshapes the net when an input changes shape: the parameters must still fit."""
        if all(self.graph.inputs.get(n) == s for n, s in shapes.items()):
            return
        self.graph.inputs.update(shapes)
        params = infer_shapes(self.graph, strict=True).params
        for name, wanted in params.items():
            have = [list(p.shape) for p in self.params.get(name, [])]
            if have != [list(s) for s in wanted]:
                raise CaffeCompatError(
                    f"at input shapes {shapes} this layer needs blobs {wanted}, not {have}",
                    path=self.path,
                    layer=name,
                )
        self._param_shapes = params
        self._build_modules()

    def forward(self, feeds: Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
        """Run the net on ``feeds`` (input name -> array or tensor; inputs not given keep their
        last data); return Caffe's net outputs by blob name (losses included), sorted by name
        as Caffe's ``net_output_blobs_``."""
        env = self._feed(feeds)
        grads = torch.is_grad_enabled()
        for index, (node, key) in enumerate(zip(self.graph.nodes, self._keys)):
            args = []
            for j, value in enumerate(node.inputs):
                tensor = env[value]
                if tensor.requires_grad and not self.plan.bottoms[index][j]:
                    tensor = tensor.detach()
                args.append(tensor)
            with torch.set_grad_enabled(grads and self.plan.layer[index]):
                result = self.module[key](*args)
            if isinstance(result, torch.Tensor):
                result = (result,)
            # Each top its own autograd node, even where a module hands a bottom back (Split,
            # Dropout at test time): diffs are per blob.
            result = [t.view_as(t) if any(t is a for a in args) else t for t in result]
            for value, tensor in zip(node.outputs, result):
                if self.keep_diffs and tensor.requires_grad and value in self._kept:
                    tensor.retain_grad()
                env[value] = tensor
        terms = [w * env[v].sum() for v, w in self.plan.loss_weights.items()]
        self._loss = torch.stack(terms).sum() if terms else torch.zeros((), device=self.device)
        self._env = env
        return {name: env[self.graph.final[name]].detach() for name in self.output_names}

    @property
    def output_names(self) -> list[str]:
        """Caffe's net outputs: blobs no layer reads, by name."""
        return sorted(self.graph.blob_of[v] for v in self.graph.outputs)

    @property
    def loss(self) -> float:
        """The weighted loss of the last forward (what Caffe's Forward returns)."""
        if self._loss is None:
            raise CaffeCompatError("no forward has run yet", path=self.path)
        return float(self._loss.detach())

    def backward(self) -> None:
        """Caffe's ``Backward``: the diffs ``Net::Init`` decided, parameter diffs accumulated."""
        refused = self.plan.refusal()
        if refused is not None:
            node, _, reason = refused
            raise CaffeCompatError(reason, path=self.path, layer=node.name, layer_type=node.type)
        if self._loss is None:
            raise CaffeCompatError("backward needs a forward first", path=self.path)
        for tensor in self._env.values():
            if tensor.requires_grad:
                tensor.grad = None  # bottom diffs are overwritten, not accumulated
        if not self._loss.requires_grad:
            return
        try:
            self._loss.backward(retain_graph=True)
        except RuntimeError as exc:
            if "modified by an inplace operation" not in str(exc):
                raise
            raise CaffeCompatError(
                "a weight changed since the forward; run forward again before backward",
                path=self.path,
            ) from None

    def forward_backward(self, feeds: Mapping[str, Any] | None = None) -> float:
        """Caffe's ``ForwardBackward``: forward, backward, and the weighted loss."""
        self.forward(feeds)
        self.backward()
        return self.loss

    def clear_param_diffs(self) -> None:
        """Zero every learnable parameter's diff (Caffe's ``ClearParamDiffs``)."""
        for param in self.learnable_params:
            param.diff.zero_()

    # --- blobs and files ------------------------------------------------------------------------

    @property
    def blobs(self) -> dict[str, Blob]:
        """Caffe's blobs by name, in order of first appearance: data after the last forward (the
        last in-place version), diff after the last backward (the first version's)."""
        found: dict[str, Blob] = {}
        values = self.graph.values
        for value in values:
            name = self.graph.blob_of.get(value, value)
            if name in found or value not in self._env:
                continue
            last = self._env[self.graph.final.get(name, value)]
            first = self._env[value]
            kept = first.is_leaf or first.retains_grad
            if kept and first.grad is not None:
                diff = first.grad
            elif value in self.plan.loss_weights:  # Caffe sets a loss top's diff to its weight
                diff = torch.full_like(first, self.plan.loss_weights[value])
            else:
                diff = torch.zeros_like(first)
            found[name] = Blob(name, last.detach(), diff.detach())
        return found

    @property
    def dropout_masks(self) -> dict[str, torch.Tensor]:
        """The last mask each TRAIN Dropout layer drew, by layer name."""
        return {n: m.mask for n, m in self._dropouts.items() if m.mask is not None}

    def layer_blobs(self) -> dict[str, list[np.ndarray]]:
        """Every layer's blobs as float32 numpy arrays (shared blobs under each layer)."""
        return {
            name: [p.tensor.detach().cpu().numpy().copy() for p in row]
            for name, row in self.params.items()
            if row
        }

    def to_caffemodel(self, path: str | os.PathLike[str]) -> None:
        """Write the layers (as this state filters them) and their blobs as a binary caffemodel,
        as Caffe's snapshot does."""
        from ..io.writer import definitions_only, write_caffemodel

        write_caffemodel(path, self._definitions(definitions_only), self.layer_blobs())

    def to_hdf5(self, path: str | os.PathLike[str]) -> None:
        """Write the blobs as Caffe's HDF5 weights (``snapshot_format: HDF5``)."""
        from ..io.hdf5 import write_hdf5

        write_hdf5(path, self.layer_blobs())

    def _definitions(self, definitions_only) -> caffe_pb2.NetParameter:
        from ..ir.phase import layer_included

        layers = []
        for layer in self.net_param.layer:
            if layer_included(self.state, layer):
                copy = caffe_pb2.LayerParameter()
                copy.CopyFrom(layer)
                if not copy.HasField("phase"):
                    copy.phase = caffe_pb2.Phase.Value(self.state.phase)
                layers.append(copy)
        net = definitions_only(layers)
        net.name = self.net_param.name
        return net


def _fits(source: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Caffe's ShapeEquals: exact, or a legacy 4-D blob that right-aligns to the target."""
    if source == target:
        return True
    return len(source) == 4 and len(target) <= 4 and source == (1,) * (4 - len(target)) + target


__all__ = ["Blob", "Graph", "Param", "TrainNet"]
