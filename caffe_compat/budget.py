"""The memory budget: what an allocation sized by the net will take, checked before it is made.

A net definition is untrusted input: ``input_dim: 1 3 100000 100000`` is 145 bytes and asks for
hundreds of GiB. Every step that allocates memory sized by the net (synthesised weights, model
building, check batches, im2col columns) asks its budget first; over it, one error line says how
much, for what, and how to change the budget. Check batches shrink first where a smaller batch
fits.

The default budget is a share of what each limit on this process leaves now (``headroom.py``),
the least over the limits, with a share that depends on who else draws on the limit:

- the address space (``RLIMIT_AS``): a hard cap private to this process, so nothing else can take
  from it between the check and the allocation, and ``headroom`` already subtracts what is
  mapped and what the libraries and thread pools still to start will map. Its share is
  ``ADDRESS_SPACE_FRACTION`` (0.85): the rest covers allocator fragmentation and the short-lived
  temporaries that the estimates below do not itemise.
- physical memory (``MemAvailable``) and the cgroup's ``memory.max``: shared with every other
  process on the machine or in the group, and they can fall at any moment, so the share stays
  ``DEFAULT_FRACTION`` (0.5).

An estimate that is short anyway (or memory another process took) still ends in one line: every
allocation failure a step meets, from Python, numpy, torch, ONNX Runtime or protobuf, becomes the
one exit-2 error of ``memory_failure``, never a traceback or a signal.
``--max-memory 2G`` on the commands, ``max_memory="2G"`` (or a byte count) in Python, sets it.

The estimates count float32 values: every value of a forward pass times the copies a step keeps
(each back end's outputs, the reference's, the runtime's own), every parameter times the copies a
step makes (torch module, ONNX protobuf, its serialised bytes, the runtime session), and the
largest per-layer scratch a layer's ``workspace`` fact declares (im2col columns, padded copies).
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from . import headroom, registry
from .errors import CaffeCompatError, MemoryBudgetError, Remedy
from .headroom import format_size
from .ir.graph import Graph, Node, Shape

DEFAULT_FRACTION = 0.5  # of shared memory (MemAvailable, a cgroup) available when made
ADDRESS_SPACE_FRACTION = 0.85  # of what a private RLIMIT_AS leaves (see the module docstring)
FRACTIONS = {"address space": ADDRESS_SPACE_FRACTION}
FLOAT32 = 4
_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from ``2G``, ``512M``, ``1.5GiB``, ``300000000`` (K/M/G/T are powers of 1024)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if not match:
            raise CaffeCompatError(
                f"a memory budget is a size such as 2G, 512M or a byte count, not {text!r}"
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise CaffeCompatError(f"a memory budget must be positive, not {text!r}")
    return value


def available_memory() -> tuple[int, str]:
    """Bytes this process can still use, and where the number comes from (``headroom``)."""
    found = headroom.available()
    return found.left, found.source


def share(limit: headroom.Limit) -> float:
    """The fraction of what ``limit`` leaves that a step may plan to use (module docstring)."""
    return FRACTIONS.get(limit.kind, DEFAULT_FRACTION)


def default_budget() -> Budget:
    """The least, over every limit on this process, of its share of what it leaves."""
    found = headroom.limits() or [headroom.available()]
    tightest = min(found, key=lambda limit: limit.left * share(limit))
    fraction = share(tightest)
    unmapped: tuple[tuple[str, int], ...] = ()
    if tightest.kind == "address space":  # what headroom set aside for libraries not loaded
        unmapped = tuple(
            (name, int(size * fraction))
            for name, size in headroom.LIBRARY_MAPPINGS.items()
            if name not in sys.modules
        )
    return Budget(
        int(tightest.left * fraction),
        f"{fraction:.0%} of the {format_size(tightest.left)} available, by {tightest.source}",
        unmapped=unmapped,
    )


@dataclass(frozen=True)
class Budget:
    """The bytes a step may allocate, and why that many (for the error message)."""

    limit: int
    origin: str
    chosen: bool = False  # set by the user, so no hint about how to set it
    # Libraries (module name, bytes of this budget) an address-space budget set aside because
    # they are not loaded yet: a step that runs before they are imported may use that room.
    unmapped: tuple[tuple[str, int], ...] = ()

    def before(self, *modules: str) -> int:
        """Bytes more a step may use that runs before ``modules`` are imported (``unmapped``)."""
        return sum(size for name, size in self.unmapped if name in modules)

    def fits(self, needed: float) -> bool:
        return needed <= self.limit

    def require(self, needed: float, what: str, *, path: str | None = None) -> None:
        """Raise one line (naming ``path``, if given) when ``what`` would need more than the
        budget."""
        if needed > self.limit:
            raise MemoryBudgetError(
                f"{what} needs {format_size(needed)}, over the memory budget of "
                f"{format_size(self.limit)} ({self.origin})",
                path=path,
                remedy=None if self.chosen else Remedy("max_memory", purpose="to change it"),
            )


def resolve(max_memory: Budget | int | str | None = None) -> Budget:
    """The budget a step works under: the one given, or the default share of what the limits
    leave now (``default_budget``)."""
    if isinstance(max_memory, Budget):
        return max_memory
    if max_memory is not None:
        size = parse_size(max_memory)
        return Budget(size, "as set", chosen=True)
    return default_budget()


@dataclass(frozen=True)
class Footprint:
    """Bytes of one graph's forward pass, split by how they grow (float32 throughout)."""

    params: int  # every parameter blob
    largest_params: int  # the blobs of the layer with the most
    per_item: float  # every value, per batch item
    fixed: int  # values that do not grow with the batch (prior boxes)
    scratch_per_item: float  # the largest per-layer scratch, per batch item
    scratch_layer: str  # the layer needing it
    largest_per_item: float = 0.0  # the largest single value, per batch item
    largest_layer: str = ""  # the layer with the most parameters
    live_per_item: float = 0.0  # the most value bytes alive at once in a forward that frees
    # each value after its last reader (calibration), per batch item

    def streaming(self) -> Footprint:
        """This footprint for a pass that keeps only live values (``live_per_item``)."""
        return dataclasses.replace(self, per_item=self.live_per_item or self.per_item)

    def values(self, batch: int, copies: int) -> float:
        """Every value held ``copies`` times at ``batch``, plus one layer's scratch."""
        return copies * (batch * self.per_item + self.fixed) + batch * self.scratch_per_item


def _count(shape: Shape) -> int:
    return math.prod(shape) if shape else 1


def _rows_per_item(shape: Shape | None, declared: int) -> bool:
    """The value grows with the batch: its first axis holds k rows per item (k = 1, or 2 for
    a batch concatenated with its mirror image, as AM-Softmax's test nets do)."""
    return bool(shape) and declared > 0 and shape[0] >= declared and shape[0] % declared == 0


def row_bounds(graph: Graph) -> dict[str, int]:
    """Values whose first axis is a data-dependent row count (the ROIs of a ``varying_rows``
    layer, and what is computed per ROI from them), with the most rows per image the layer
    making them allows (its ``row_bound`` fact). The shape rule reports one row (Caffe's
    Reshape there); the budget counts these values at the bound."""
    bounds: dict[str, int] = {}
    for node in graph.nodes:
        info = registry.facts(node.type)
        ins = [graph.shapes.get(v) for v in node.inputs]
        if info.varying_rows and info.row_bound is not None:
            if any(s is None for s in ins):
                continue
            try:
                bound = int(info.row_bound(node, ins))
            except ValueError:
                continue  # its converter will say what is wrong
            bounds.update((v, bound) for v in node.outputs)
            continue
        carried = [(bounds[v], graph.shapes[v][0]) for v in node.inputs if v in bounds]
        if not carried or not all(s for s in ins):
            continue
        bound, rows = max(carried)
        for value in node.outputs:
            shape = graph.shapes.get(value)
            if shape and shape[0] == rows:  # rows follow the ROIs (pooled maps, fc heads)
                bounds[value] = bound
    return bounds


def _bounded_workspace(
    node: Node, workspace: Callable[..., int], ins: list, outs: list, bounds: Mapping[str, int]
) -> int:
    """A per-ROI layer's workspace with its ROI values at their bound's rows (the workspace
    need not grow in step with the rows: the reference's columns are made in slabs)."""

    def at(values: list[str], shapes: list) -> list:
        return [(bounds[v], *s[1:]) if v in bounds and s else s for v, s in zip(values, shapes)]

    try:
        return workspace(node, at(node.inputs, ins), at(node.outputs, outs))
    except ValueError:
        return 0


def _at_bound(shape: Shape, bound: int) -> float:
    """Bytes per image of a value computed per ROI, at ``bound`` ROIs."""
    return FLOAT32 * _count(shape[1:]) * bound


def footprint(graph: Graph, params: Mapping[str, list[Shape]]) -> Footprint:
    """The footprint of ``graph`` from its inferred value shapes and parameter shapes (values
    per ROI at the most ROIs their layer allows, ``row_bounds``)."""
    first = next(iter(graph.inputs.values()), None)
    declared = first[0] if first else 1
    per_item, fixed, largest = 0.0, 0, 0.0
    bounds = row_bounds(graph)
    for value, shape in graph.shapes.items():
        if value in bounds and shape:
            size = _at_bound(shape, bounds[value])
            per_item += size
            largest = max(largest, size)
        elif _rows_per_item(shape, declared):
            per_item += FLOAT32 * _count(shape) / declared
            largest = max(largest, FLOAT32 * _count(shape) / declared)
        else:
            fixed += FLOAT32 * _count(shape)
    layer_params = [sum(_count(s) for s in shapes) for shapes in params.values()] or [0]
    scratch, scratch_layer = 0.0, ""
    for node in graph.nodes:
        workspace = registry.facts(node.type).workspace
        ins = [graph.shapes.get(v) for v in node.inputs]
        outs = [graph.shapes.get(v) for v in node.outputs]
        if workspace is None or any(s is None for s in ins + outs) or not ins:
            continue
        try:
            floats = workspace(node, ins, outs)
        except ValueError:
            continue  # the shape rule accepted the layer; its converter will say what is wrong
        batch = declared if _rows_per_item(ins[0], declared) else 1
        size = FLOAT32 * floats / batch
        if node.inputs[0] in bounds:  # per ROI: at the bound's rows, per image
            size = FLOAT32 * _bounded_workspace(node, workspace, ins, outs, bounds)
        if size > scratch:
            scratch, scratch_layer = size, node.name
    sizes = {name: sum(_count(s) for s in shapes) for name, shapes in params.items()}
    return Footprint(
        largest_layer=max(sizes, key=sizes.__getitem__, default=""),
        live_per_item=_live_peak(graph),
        params=FLOAT32 * sum(layer_params),
        largest_params=FLOAT32 * max(layer_params),
        per_item=per_item,
        fixed=fixed,
        scratch_per_item=scratch,
        scratch_layer=scratch_layer,
        largest_per_item=largest,
    )


def value_sizes(graph: Graph, batch: int) -> dict[str, float]:
    """Bytes of each value (float32) at ``batch`` items: values that grow with the batch scaled
    from the declared one, the others as they are."""
    first = next(iter(graph.inputs.values()), None)
    declared = first[0] if first else 1
    sizes = {}
    bounds = row_bounds(graph)
    for value, shape in graph.shapes.items():
        count = FLOAT32 * _count(shape)
        if value in bounds and shape:
            sizes[value] = _at_bound(shape, bounds[value]) * batch
        else:
            sizes[value] = count / declared * batch if _rows_per_item(shape, declared) else count
    return sizes


def last_readers(graph: Graph) -> dict[str, int]:
    """Value -> index of the last node reading it (-1: none); net outputs live to the end."""
    last = {value: -1 for value in graph.inputs}
    for index, node in enumerate(graph.nodes):
        for value in node.inputs:
            last[value] = index
        for value in node.outputs:
            last.setdefault(value, -1)
    for value in graph.outputs:
        last[value] = len(graph.nodes)
    return last


def _live_peak(graph: Graph) -> float:
    """The most bytes per batch item alive at once when each value is freed after its last
    reader: at node i, the values made before and still read at i or later, plus i's tops."""
    inputs = sum(FLOAT32 * _count(s) / (s[0] if s else 1) for s in graph.inputs.values())
    return max([inputs] + [peak.live_per_item for peak in layer_peaks(graph, {})])


@dataclass(frozen=True)
class LayerPeak:
    """What one layer of a forward pass that frees dead values holds while it runs."""

    name: str
    live_per_item: float  # values alive while it runs (its tops included), per batch item
    top_per_item: float  # its largest top, per batch item
    scratch_per_item: float  # its workspace (im2col columns), per batch item
    params: int  # its own parameter blobs, bytes


def layer_peaks(graph: Graph, params: Mapping[str, list[Shape]]) -> list[LayerPeak]:
    """Per layer, in execution order, the bytes alive while it runs (float32): a step whose
    extra copies are tied to one layer (its weights rebuilt, its top copied to float64) peaks
    at the worst layer, not at the sum of every layer's worst."""
    first = next(iter(graph.inputs.values()), None)
    declared = first[0] if first else 1
    last = last_readers(graph)
    bounds = row_bounds(graph)

    def size(value: str) -> float:
        shape = graph.shapes.get(value)
        if shape is None:
            return 0.0
        if value in bounds and shape:
            return _at_bound(shape, bounds[value])
        per = declared if _rows_per_item(shape, declared) else 1
        return FLOAT32 * _count(shape) / per

    live = {v: size(v) for v in graph.inputs}
    found = []
    for index, node in enumerate(graph.nodes):
        for value in node.outputs:
            live[value] = size(value)
        scratch = 0.0
        workspace = registry.facts(node.type).workspace
        ins = [graph.shapes.get(v) for v in node.inputs]
        outs = [graph.shapes.get(v) for v in node.outputs]
        if workspace is not None and ins and all(s is not None for s in ins + outs):
            try:
                floats = workspace(node, ins, outs)
            except ValueError:
                floats = 0
            batch = declared if _rows_per_item(ins[0], declared) else 1
            scratch = FLOAT32 * floats / batch
            if node.inputs[0] in bounds:  # per ROI: at the bound's rows, per image
                scratch = FLOAT32 * _bounded_workspace(node, workspace, ins, outs, bounds)
        found.append(
            LayerPeak(
                name=node.name,
                live_per_item=sum(live.values()),
                top_per_item=max((size(v) for v in node.outputs), default=0.0),
                scratch_per_item=scratch,
                params=FLOAT32 * sum(_count(s) for s in params.get(node.name, [])),
            )
        )
        for value in [v for v in live if last.get(v, -1) <= index]:
            del live[value]
    return found


def plan_batch(
    budget: Budget,
    need: Footprint,
    wanted: int,
    *,
    fixed: float,
    copies: int,
    what: str,
    shrink: bool = True,
) -> int:
    """The largest batch up to ``wanted`` whose values (``copies`` of each, plus scratch) fit
    beside ``fixed`` bytes; ``wanted`` itself when ``shrink`` is False. Raises when none fits."""
    per_item = copies * need.per_item + need.scratch_per_item
    base = fixed + copies * need.fixed
    if shrink and per_item > 0 and base + wanted * per_item > budget.limit:
        batch = min(wanted, int((budget.limit - base) // per_item))
        if batch >= 1:
            return batch
        wanted = 1
    total = base + wanted * per_item
    if budget.fits(total):
        return wanted
    detail = f"weights and fixed values {format_size(fixed + copies * need.fixed)}, "
    detail += f"values {format_size(need.per_item)} per item x{copies} copies"
    if need.scratch_layer:
        detail += (
            f", scratch {format_size(need.scratch_per_item)} per item for layer "
            f'"{need.scratch_layer}"'
        )
    budget.require(total, f"{what} at batch {wanted} ({detail})")
    return wanted


# What an allocation that failed anyway looks like, by library: MemoryError (Python, numpy),
# std::bad_alloc and allocator messages (torch, ONNX Runtime, OpenCV, pybind11), thread
# creation refused (thread stacks are address space too), protobuf unable to serialize.
_FAILURE_WORDS = (
    "bad_alloc",
    "bad allocation",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate",
    "out of memory",
    "insufficient memory",
    "memory allocation failed",
    "thread creation failed",
    "can't start new thread",
    "failed to create thread",
    "failed to map segment",  # the dynamic loader, mapping a library under RLIMIT_AS
)
# The step a failure happened in, from the innermost frame that names one (function, then module).
_STEP_FUNCTIONS = {
    "float64_judge": "running the float64 reference",
    "_opencv_judge": "running the OpenCV judge",
    "run_torch": "running the PyTorch model",
    "run_onnxruntime": "running ONNX Runtime",
    "open_onnxruntime": "loading the model into ONNX Runtime",
    "to_onnx": "building the ONNX model",
    "to_torch": "building the PyTorch model",
    "compare": "comparing the results",
    "synthesize": "synthesizing weights",
    "read_weights": "reading the weights",
}
_STEP_MODULES = (
    ("caffe_compat.reference", "running the float64 reference"),
    ("caffe_compat.verify.opencv", "running the OpenCV judge"),
    ("caffe_compat.converters.onnx", "building the ONNX model"),
    ("caffe_compat.converters.torch", "running the PyTorch model"),
    ("caffe_compat.verify", "verifying"),
    ("caffe_compat.tools.convert", "converting"),
    ("caffe_compat.tools.synth", "synthesizing weights"),
    ("caffe_compat.io", "reading or writing a file"),
    ("caffe_compat.app", "predicting"),
    ("onnxruntime", "running ONNX Runtime"),
    ("torch", "running PyTorch"),
)


def _is_memory_failure(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    if type(exc).__name__ == "EncodeError":  # protobuf: "Failed to serialize proto"
        return True
    if isinstance(exc, OSError) and exc.errno == 12:  # ENOMEM
        return True
    text = str(exc).lower()
    library = type(exc).__module__.startswith(("onnxruntime", "cv2"))
    if isinstance(exc, RuntimeError) and "resource temporarily unavailable" in text:
        return True  # std::system_error from a thread that could not be created
    # ImportError / OSError: a library (torch, ONNX Runtime, OpenCV) whose segments the loader
    # could not map, its first import falling inside a step under an address-space cap.
    kinds = (RuntimeError, ImportError, OSError)
    return (isinstance(exc, kinds) or library) and any(w in text for w in _FAILURE_WORDS)


def _failed_step(exc: BaseException) -> str:
    frames = []
    trace = exc.__traceback__
    while trace is not None:
        frames.append(trace.tb_frame)
        trace = trace.tb_next
    if type(exc).__name__ == "EncodeError":
        return "serializing the ONNX model"
    library = re.search(r"([\w.+-]+\.so[\w.]*)", str(exc))
    if isinstance(exc, (ImportError, OSError)) and library:
        return f"loading the library {library.group(1)}"
    for frame in reversed(frames):
        step = _STEP_FUNCTIONS.get(frame.f_code.co_name)
        if step:
            return step
    for frame in reversed(frames):
        module = frame.f_globals.get("__name__", "")
        for prefix, step in _STEP_MODULES:
            if module == prefix or module.startswith(prefix + "."):
                return step
    return "this step"


def memory_failure(exc: BaseException) -> MemoryBudgetError | None:
    """The one-line error for an allocation that failed despite the budget (the estimate was
    short, or something else took the memory), naming the step and the limit it ran into; None
    when ``exc`` is not an allocation failure."""
    if not _is_memory_failure(exc):
        return None
    detail = " ".join(str(exc).split())[:160] or type(exc).__name__
    limit = headroom.hard_limit() or "physical memory"
    step = _failed_step(exc)
    text = f"out of memory while {step} ({type(exc).__name__}: {detail}) under {limit}"
    if step.startswith("loading the library"):
        # No budget shrinks a library: the limit itself must leave room for it.
        return MemoryBudgetError(text + "; raise the limit: the library alone does not fit")
    return MemoryBudgetError(
        text,
        remedy=Remedy(
            "max_memory",
            purpose="with a smaller size, so steps shrink their batch or stop before they start",
        ),
    )
