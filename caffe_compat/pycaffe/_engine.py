"""Runs a pycaffe Net's layers with the PyTorch back end, reading and writing its Caffe blobs.

Each layer reads its bottoms' current contents and writes its tops, so ``forward(start=...)`` and
in-place layers behave as in Caffe. The modules come from ``CaffeNet`` (the converters' own
PyTorch rebuild); a layer is rebuilt only when its shapes, device or weights changed.

Weight edits through ``net.params[...][i].data`` reach the next forward without copying on the
CPU: a module tensor that is a plain copy of a Caffe blob is made to share the blob's memory. Which
tensors are plain copies is found by building the layer twice from two distinct marker patterns;
a layer whose modules hold anything derived from the weights (or plain Python numbers that change
with them) shares nothing. Blobs that are not shared are snapshotted when Python first reads them
(before any write can happen) and compared before each forward; only they cost anything.

Nets built for training (train/val nets, TRAIN phase, ``force_backward``) bind the blobs into the
modules' ``blob_slots`` instead (the same memory on the CPU), so the parameters a backward needs
are the blobs themselves. A forward keeps, for each layer whose backward Caffe runs, the layer's
autograd record: its bottoms as leaves and its tops. ``backward`` is Caffe's ``BackwardFromTo``:
layer by layer from the top diffs held in the blobs (whatever Python wrote there), bottom diffs
overwritten and parameter diffs accumulated. Layers keep what their forward drew (Dropout's
mask), as Caffe's do; a layer asked for a backward before any forward runs its forward first on
the blobs' current data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import registry
from ..errors import CaffeCompatError
from ..ir.graph import Graph, Node
from ._caffe import Blob, current_device
from ._layout import DATA, INPUT, SPLIT, Layout

if TYPE_CHECKING:
    import torch
    from torch import nn

_SKIP_STATE = {"_parameters", "_buffers", "_modules"}


@dataclasses.dataclass
class _Runtime:
    key: tuple
    shared: set[int]
    snapshots: dict[int, np.ndarray]
    stale: bool = False
    bound: list[torch.Tensor] | None = None  # the module's parameters, one per blob (training)


@dataclasses.dataclass
class Needs:
    """Caffe's backward decisions for one layer of the Layout (``Net::Init``)."""

    layer: bool = False  # layer_need_backward_
    bottoms: list[bool] = dataclasses.field(default_factory=list)  # bottom_need_backward_
    params: list[bool] = dataclasses.field(default_factory=list)  # parameter diffs it writes
    refusal: str | None = None  # why Caffe's Backward aborts at this layer, if it does


@dataclasses.dataclass
class _Record:
    """What a forward kept for a layer's backward."""

    inputs: list[torch.Tensor]  # the bottoms as autograd leaves
    outputs: list[torch.Tensor]


DataTops = Callable[["torch.device"], dict[str, Any]]


def _marks(arrays: list[np.ndarray], sign: float, offset: float) -> list[np.ndarray]:
    """Distinct values for every element of every blob (a blob's copy is then unmistakable)."""
    out, start = [], 0
    for array in arrays:
        values = np.arange(start, start + array.size, dtype=np.float32)
        values *= np.float32(sign)
        values += np.float32(offset)
        out.append(values.reshape(array.shape))
        start += array.size
    return out


def _tensor_slots(module: nn.Module) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every tensor a module holds: (submodule, kind, attribute) -> tensor."""
    import torch

    slots: dict[tuple[str, str, str], torch.Tensor] = {}
    for prefix, sub in module.named_modules(remove_duplicate=False):
        for name, value in sub._parameters.items():
            if value is not None:
                slots[(prefix, "param", name)] = value
        for name, value in sub._buffers.items():
            if value is not None:
                slots[(prefix, "buffer", name)] = value
        for name, value in vars(sub).items():
            if isinstance(value, torch.Tensor) and name not in _SKIP_STATE:
                slots[(prefix, "attr", name)] = value
    return slots


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and bool(np.array_equal(a, b, equal_nan=True))
        )
    try:
        return bool(a == b)
    except Exception:
        return a is b


def _same_plain_state(a: nn.Module, b: nn.Module) -> bool:
    """True when no non-tensor attribute (a float scale, a shape...) depends on the weights."""
    import torch

    subs_a = list(a.named_modules(remove_duplicate=False))
    subs_b = list(b.named_modules(remove_duplicate=False))
    if [n for n, _ in subs_a] != [n for n, _ in subs_b]:
        return False
    for (_, x), (_, y) in zip(subs_a, subs_b):
        vx, vy = vars(x), vars(y)
        if vx.keys() != vy.keys():
            return False
        for name, value in vx.items():
            if name in _SKIP_STATE or isinstance(value, torch.Tensor):
                continue
            if not _equal(value, vy[name]):
                return False
    return True


def _share_plan(a: nn.Module, b: nn.Module, marks_a, marks_b) -> dict[int, list] | None:
    """Blob index -> module slots that hold an unmodified copy of it, or None if unsafe."""
    import torch

    slots_a, slots_b = _tensor_slots(a), _tensor_slots(b)
    if slots_a.keys() != slots_b.keys() or not _same_plain_state(a, b):
        return None
    plan: dict[int, list] = {}
    for slot, x in slots_a.items():
        y = slots_b[slot]
        hit = None
        if x.dtype == torch.float32 and y.dtype == torch.float32:
            for index, (ma, mb) in enumerate(zip(marks_a, marks_b)):
                same = tuple(x.shape) == ma.shape and tuple(y.shape) == mb.shape
                same = same and torch.equal(x, torch.from_numpy(ma))
                if same and torch.equal(y, torch.from_numpy(mb)):
                    hit = index
                    break
        if hit is not None:
            plan.setdefault(hit, []).append(slot)
        elif x.shape != y.shape or x.dtype != y.dtype or not torch.equal(x, y):
            return None  # derived from the weights: this layer cannot share memory
    return plan


def _assign(module: nn.Module, slot: tuple[str, str, str], tensor: torch.Tensor) -> None:
    prefix, kind, name = slot
    sub = module.get_submodule(prefix) if prefix else module
    if kind == "param":
        sub._parameters[name].data = tensor  # type: ignore[union-attr]
    elif kind == "buffer":
        sub._buffers[name] = tensor
    else:
        setattr(sub, name, tensor)


def _has_slots(module: nn.Module, count: int) -> bool:
    slots = getattr(module, "blob_slots", None)
    return slots is not None and len(slots) == count


def _bound_tensors(module: nn.Module, count: int) -> list[torch.Tensor]:
    """The tensors in the module's ``blob_slots`` (after a move to a device)."""
    out = []
    for path in module.blob_slots[:count]:  # type: ignore[union-attr]
        owner_path, _, name = path.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        out.append(getattr(owner, name))
    return out


def on_host(device: torch.device) -> bool:
    """CPU: modules share the blobs' memory and results are copied into the blobs at once.
    Elsewhere results stay on the device until read (Caffe's SyncedMemory) and weights are
    copied to it, edits being found by the snapshots."""
    return device.type == "cpu"


class Engine:
    """Executes a Layout's layers on the current device, keeping Caffe's blob semantics."""

    def __init__(
        self,
        graph: Graph,
        layout: Layout,
        blobs: list[Blob],
        params: list[list[Blob]],
        nodes: list[Node | None],
    ) -> None:
        self.graph = graph
        self.layout = layout
        self.blobs = blobs
        self.params = params
        self.nodes = nodes
        self.before: list[Callable[[int], Any]] = []
        self.after: list[Callable[[int], Any]] = []
        self.before_backward: list[Callable[[int], Any]] = []
        self.after_backward: list[Callable[[int], Any]] = []
        self.bind = False  # training: blobs bound into the modules (see the module docstring)
        self.needs: list[Needs] = [Needs() for _ in layout.layers]
        self.data: dict[int, DataTops] = {}  # DATA layer index -> what fills its tops
        self.feeds: dict[str, torch.Tensor] = {}  # tops given for the next forward (solvers)
        self.pull: Callable[[], dict[str, torch.Tensor]] | None = None  # a solver's next batch
        self.generators: dict[str, torch.Generator] = {}
        self.seed = 0
        self._records: dict[int, _Record] = {}
        self._index = {name: i for i, name in enumerate(layout.blob_names)}
        self._model: Any = None  # CaffeNet, built at the first forward
        self._keys: dict[str, str] = {}
        self._runtime: dict[int, _Runtime] = {}
        self._plans: dict[tuple, dict[int, list] | None] = {}
        for li, layer_params in enumerate(params):
            for bi, blob in enumerate(layer_params):
                self.watch(li, bi, blob)

    # --- weights --------------------------------------------------------------------------------

    def watch(self, li: int, bi: int, blob: Blob) -> None:
        """Snapshot blob ``bi`` of layer ``li`` when Python first reads it, unless it is shared."""

        def on_touch(touched: Blob) -> None:
            rt = self._runtime.get(li)
            if rt is not None and bi not in rt.shared and self.params[li][bi] is touched:
                rt.snapshots[bi] = touched._view().copy()

        blob._watch(on_touch)

    def invalidate(self, li: int | None = None) -> None:
        """Weights changed behind the modules' back (copy_from, share_with): rebuild."""
        for index, rt in self._runtime.items():
            if li is None or index == li:
                rt.stale = True

    def _edited(self, li: int, rt: _Runtime) -> bool:
        blobs = self.params[li]
        return any(
            not np.array_equal(blobs[bi]._view(), snapshot) for bi, snapshot in rt.snapshots.items()
        )

    # --- modules --------------------------------------------------------------------------------

    def _key(self, li: int, device: torch.device) -> tuple:
        node = self.nodes[li]
        assert node is not None
        shapes = tuple(self.graph.shapes.get(v) for v in (*node.inputs, *node.outputs))
        blobs = tuple((b.shape, b.version, id(b)) for b in self.params[li])
        return (str(device), shapes, blobs)

    def _convert(self, node: Node) -> nn.Module:
        from ..converters.torch._base import TorchContext

        entry = registry.lookup(node.type, "torch")
        if entry is None:
            raise CaffeCompatError(
                "no PyTorch converter", path=self.graph.path, layer=node.name, layer_type=node.type
            )
        try:
            module = entry.fn(node, TorchContext(self.graph, node))
        except CaffeCompatError:
            raise
        except ValueError as exc:
            raise CaffeCompatError(
                str(exc), path=self.graph.path, layer=node.name, layer_type=node.type
            ) from None
        return module.eval()

    def _plan(self, li: int, node: Node) -> dict[int, list] | None:
        key = (li, tuple(self.graph.shapes.get(v) for v in (*node.inputs, *node.outputs)))
        key += (tuple(b.shape for b in node.blobs),)
        if key not in self._plans:
            try:
                marks_a = _marks(node.blobs, 1.0, 0.5)
                marks_b = _marks(node.blobs, -1.0, -0.25)
                a = self._convert(dataclasses.replace(node, blobs=marks_a))
                b = self._convert(dataclasses.replace(node, blobs=marks_b))
                self._plans[key] = _share_plan(a, b, marks_a, marks_b)
            except Exception:
                self._plans[key] = None  # the converter refused marker values: do not share
        return self._plans[key]

    def _adopt(self, li: int, module: nn.Module, device: torch.device) -> nn.Module:
        """Share weights with the blobs (CPU) or move to the device; record what to watch."""
        import torch

        node = self.nodes[li]
        assert node is not None
        shared: set[int] = set()
        bound = None
        if self.bind and self.params[li] and _has_slots(module, len(self.params[li])):
            bound = self._bind(li, module, device)
            shared = set(range(len(bound))) if on_host(device) else set()
        elif on_host(device):
            plan = self._plan(li, node) if node.blobs else None
            for bi, slots in (plan or {}).items():
                tensor = torch.from_numpy(node.blobs[bi])
                for slot in slots:
                    _assign(module, slot, tensor)
                shared.add(bi)
        if not on_host(device):
            module = module.to(device)
            if bound is not None:
                bound = _bound_tensors(module, len(bound))
        if hasattr(module, "generator") and hasattr(module, "mask"):
            module.generator = self.generator(device)  # Dropout draws from the net's generator
        snapshots = {
            bi: blob._view().copy()
            for bi, blob in enumerate(self.params[li])
            if bi not in shared and blob._touched
        }
        self._runtime[li] = _Runtime(self._key(li, device), shared, snapshots, bound=bound)
        self._model.layers[self._keys[node.name]] = module
        return module

    def _bind(self, li: int, module: nn.Module, device: torch.device) -> list[torch.Tensor]:
        """The blobs as the module's parameters: their memory on the CPU, copies elsewhere;
        a parameter whose diff Caffe computes requires grad."""
        import torch
        from torch import nn

        from ..converters.torch._base import bind_blobs

        wanted = self.needs[li].params
        tensors = []
        for bi, blob in enumerate(self.params[li]):
            tensor = torch.from_numpy(blob._view())
            grad = bi < len(wanted) and wanted[bi]
            tensors.append(nn.Parameter(tensor, requires_grad=grad))
        bind_blobs(module, tensors)
        return tensors

    def generator(self, device: torch.device) -> torch.Generator:
        """The net's generator on ``device`` (Dropout masks, DummyData), from its seed."""
        import torch

        key = str(device)
        if key not in self.generators:
            made = torch.Generator(device=device)
            made.manual_seed(self.seed)
            self.generators[key] = made
        return self.generators[key]

    def reseed(self, seed: int) -> None:
        """Start every generator of the net again from ``seed``."""
        self.seed = int(seed)
        for made in self.generators.values():
            made.manual_seed(self.seed)

    def _attach_blobs(self) -> None:
        for node, blobs in zip(self.nodes, self.params):
            if node is not None:
                node.blobs = [b._view() for b in blobs]

    def _ensure_model(self, device: torch.device) -> None:
        if self._model is not None:
            return
        from ..converters.torch.model import CaffeNet

        self._attach_blobs()
        self._model = CaffeNet(self.graph)
        self._keys = dict(zip((n.name for n in self.graph.nodes), self._model.layers.keys()))
        for li, node in enumerate(self.nodes):
            if node is not None:
                self._adopt(li, self._model.layers[self._keys[node.name]], device)

    def module(self, li: int, device: torch.device) -> nn.Module:
        node = self.nodes[li]
        assert node is not None
        rt = self._runtime.get(li)
        if rt is None or rt.stale or rt.key != self._key(li, device) or self._edited(li, rt):
            node.blobs = [b._view() for b in self.params[li]]
            return self._adopt(li, self._convert(node), device)
        return self._model.layers[self._keys[node.name]]

    # --- forward --------------------------------------------------------------------------------

    def run(self, start: int, end: int) -> None:
        """Caffe's ForwardFromTo(start, end), both inclusive. With autograd on (the default),
        layers whose backward Caffe runs keep their records for ``backward``."""
        import torch

        device = current_device()
        self._ensure_model(device)
        record = torch.is_grad_enabled()
        fed = [
            li
            for li in range(start, end + 1)
            if self.layout.layers[li].kind == DATA and li not in self.data
        ]
        if fed and not self.feeds and self.pull is not None:
            self.feeds = self.pull()  # a solver's net run from Python: its next batch
        env: dict[str, torch.Tensor] = {}
        loaded: dict[str, torch.Tensor] = {}
        host_ptrs: dict[int, str] = {}

        def fetch(name: str) -> torch.Tensor:
            if name in env:
                return env[name]
            if name not in loaded:
                blob = self.blobs[self._index[name]]
                pending = blob._pending
                if pending is not None and not on_host(device):
                    loaded[name] = pending.to(device)
                else:
                    blob._sync()
                    tensor = torch.from_numpy(blob._view())
                    if on_host(device):
                        host_ptrs[tensor.untyped_storage().data_ptr()] = name
                        loaded[name] = tensor
                    else:
                        loaded[name] = tensor.to(device, copy=True)
            return loaded[name]

        try:
            with torch.no_grad():
                for li in range(start, end + 1):
                    layer = self.layout.layers[li]
                    for callback in self.before:
                        callback(li)
                    if layer.kind == SPLIT:
                        source = fetch(layer.bottoms[0])
                        for top in layer.tops:
                            env[top] = source
                    elif layer.kind == DATA:
                        self._fill(li, device, env)
                    elif layer.kind != INPUT:
                        keep = record and self.needs[li].layer
                        args = [fetch(b) for b in layer.bottoms]
                        if keep:
                            args = [
                                self._leaf(a, b in loaded, want)
                                for a, b, want in zip(args, layer.bottoms, self.needs[li].bottoms)
                            ]
                        module = self.module(li, device)
                        with torch.set_grad_enabled(keep):
                            result = module(*args)
                        if isinstance(result, torch.Tensor):
                            result = (result,)
                        if keep:
                            self._records[li] = _Record(args, list(result))
                        else:
                            self._records.pop(li, None)
                        for top, tensor in zip(layer.tops, result):
                            env[top] = tensor
                    for callback in self.after:
                        callback(li)
        finally:
            self.feeds = {}
        self._publish({k: v.detach() for k, v in env.items()}, host_ptrs, device)
        if not on_host(device):
            self._statistics_home(start, end)

    @staticmethod
    def _leaf(tensor: torch.Tensor, from_blob: bool, wanted: bool) -> torch.Tensor:
        """A bottom as an autograd leaf; one read from a blob's memory is copied, since the
        blob may be overwritten before the backward (in-place layers)."""
        leaf = tensor.detach().clone() if from_blob else tensor.detach()
        return leaf.requires_grad_(wanted)

    def _fill(self, li: int, device: torch.device, env: dict) -> None:
        """A data layer's forward: tops given by a solver, else drawn or read by the layer;
        a top it leaves alone keeps the blob's contents (a constant DummyData top)."""
        import torch

        layer = self.layout.layers[li]
        given = {top: self.feeds[top] for top in layer.tops if top in self.feeds}
        if len(given) < len(layer.tops) and li in self.data:
            drawn = self.data[li](device)
            given.update({k: v for k, v in drawn.items() if k not in given})
        for top, tensor in given.items():
            if tensor is not None:
                env[top] = tensor.to(device=device, dtype=torch.float32)  # no copy if already

    def _statistics_home(self, start: int, end: int) -> None:
        """On a device, a layer that updates its blobs in its forward (BatchNorm's statistics
        in TRAIN) sends them back to the blobs."""
        for li in range(start, end + 1):
            node = self.nodes[li]
            rt = self._runtime.get(li)
            if node is None or rt is None or rt.bound is None:
                continue
            if registry.facts(node.type).statistics:
                for blob, tensor in zip(self.params[li], rt.bound):
                    np.copyto(blob._view(), tensor.detach().cpu().numpy())
                rt.snapshots = {bi: b._view().copy() for bi, b in enumerate(self.params[li])}

    # --- backward -------------------------------------------------------------------------------

    def backward(self, start: int, end: int) -> None:
        """Caffe's BackwardFromTo(start, end), start >= end: each layer that needs a backward
        reads its tops' diffs, overwrites its bottoms' diffs and adds to its parameter diffs."""
        import torch

        device = current_device()
        self._ensure_model(device)
        for li in range(start, end - 1, -1):
            for callback in self.before_backward:
                callback(li)
            needs = self.needs[li]
            layer = self.layout.layers[li]
            if needs.layer and needs.refusal:
                raise CaffeCompatError(
                    needs.refusal, path=self.graph.path, layer=layer.name, layer_type=layer.type
                )
            if needs.layer and layer.kind == SPLIT:
                if needs.bottoms and needs.bottoms[0]:
                    total = self._diff(layer.tops[0]).copy()
                    for top in layer.tops[1:]:
                        total += self._diff(top)
                    self._set_diff(layer.bottoms[0], total)
            elif needs.layer and layer.kind not in (INPUT, DATA):
                self._backward_layer(li, device, torch)
            for callback in self.after_backward:
                callback(li)

    def _diff(self, name: str) -> np.ndarray:
        return self.blobs[self._index[name]].diff

    def _set_diff(self, name: str, value: np.ndarray) -> None:
        target = self._diff(name)
        np.copyto(target, np.reshape(value, target.shape), casting="unsafe")

    def _backward_layer(self, li: int, device: torch.device, torch: Any) -> None:
        layer = self.layout.layers[li]
        needs = self.needs[li]
        rec = self._records.get(li)
        if rec is None:
            rec = self._rerun(li, device)
        rt = self._runtime.get(li)
        bound = rt.bound if rt is not None and rt.bound is not None else []
        if any(needs.params) and not bound:
            raise CaffeCompatError(
                "this layer's PyTorch module does not name its blobs (blob_slots), so its "
                "parameter diffs cannot be computed",
                path=self.graph.path,
                layer=layer.name,
                layer_type=layer.type,
            )
        outputs, grads = [], []
        for tensor, top in zip(rec.outputs, layer.tops):
            if tensor.requires_grad:
                diff = torch.from_numpy(self._diff(top)).reshape(tensor.shape)
                outputs.append(tensor)
                grads.append(diff.to(tensor.device, tensor.dtype))
        bottoms = [j for j, want in enumerate(needs.bottoms) if want]
        params = [j for j, want in enumerate(needs.params) if want and j < len(bound)]
        wrt = [rec.inputs[j] for j in bottoms] + [bound[j] for j in params]
        usable = [t.requires_grad for t in wrt]
        result: list[Any] = [None] * len(wrt)
        if outputs and any(usable):
            found = torch.autograd.grad(
                outputs,
                [t for t, ok in zip(wrt, usable) if ok],
                grads,
                retain_graph=True,
                allow_unused=True,
            )
            it = iter(found)
            result = [next(it) if ok else None for ok in usable]
        for k, j in enumerate(bottoms):
            grad = result[k]
            name = layer.bottoms[j]
            if grad is None:
                self._diff(name)[...] = 0.0
            else:
                self._set_diff(name, grad.detach().cpu().numpy())
        for k, j in enumerate(params, start=len(bottoms)):
            grad = result[k]
            if grad is not None:
                diff = self.params[li][j].diff
                diff += grad.detach().cpu().numpy().reshape(diff.shape)

    def _rerun(self, li: int, device: torch.device) -> _Record:
        """A layer's forward on its bottoms' current data, for a backward no forward preceded
        (its tops are not written)."""
        import torch

        layer = self.layout.layers[li]
        args = []
        for name, want in zip(layer.bottoms, self.needs[li].bottoms):
            blob = self.blobs[self._index[name]]
            blob._sync()
            tensor = torch.from_numpy(blob._view().copy()).to(device)
            args.append(tensor.requires_grad_(want))
        module = self.module(li, device)
        with torch.enable_grad():
            result = module(*args)
        if isinstance(result, torch.Tensor):
            result = (result,)
        self._records[li] = _Record(args, list(result))
        return self._records[li]

    def forget(self) -> None:
        """Drop the forward's records (their memory) until the next forward."""
        self._records.clear()

    def _publish(self, env: dict, host_ptrs: dict[int, str], device: torch.device) -> None:
        # A result that is a view of another blob's host memory must be read before any write.
        ready = {}
        for name, tensor in env.items():
            source = host_ptrs.get(tensor.untyped_storage().data_ptr()) if tensor.is_cpu else None
            ready[name] = tensor.clone() if source is not None and source != name else tensor
        for name, tensor in ready.items():
            blob = self.blobs[self._index[name]]
            shape = tuple(tensor.shape)
            if on_host(device):
                blob._pending = None
                if shape != blob.shape:
                    blob._set_shape(shape)
                np.copyto(blob._view(), tensor.numpy(), casting="unsafe")
            else:
                blob._set_shape(shape)
                blob._pending = tensor
