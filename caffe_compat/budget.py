"""The memory budget: what an allocation sized by the net will take, checked before it is made.

A net definition is untrusted input: ``input_dim: 1 3 100000 100000`` is 145 bytes and asks for
hundreds of GiB. Every step that allocates memory sized by the net (synthesised weights, model
building, check batches, im2col columns) asks its budget first; over it, one error line says how
much, for what, and how to change the budget. Check batches shrink first where a smaller batch
fits.

The default budget is half the memory available now: the least of MemAvailable
(``/proc/meminfo``), the cgroup's headroom and the address space ``RLIMIT_AS`` leaves.
``--max-memory 2G`` on the commands, ``max_memory="2G"`` (or a byte count) in Python, sets it.

The estimates count float32 values: every value of a forward pass times the copies a step keeps
(each back end's outputs, the reference's, the runtime's own), every parameter times the copies a
step makes (torch module, ONNX protobuf, its serialised bytes, the runtime session), and the
largest per-layer scratch a layer's ``workspace`` fact declares (im2col columns, padded copies).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from . import registry
from .errors import CaffeCompatError, MemoryBudgetError, Remedy
from .ir.graph import Graph, Shape

DEFAULT_FRACTION = 0.5  # of the memory available when the budget is made
FLOAT32 = 4
UNKNOWN_AVAILABLE = 4 * 2**30  # assumed where the platform does not say (not Linux)
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


def format_size(count: float) -> str:
    """``1.5 GiB``, ``300 MiB``, ``12 KiB``, ``100 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= size:
            value = count / size
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:,.0f} {unit}"
    return f"{int(count)} B"


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_headroom() -> int | None:
    """cgroup v2 ``memory.max - memory.current`` of this process's group, when limited."""
    try:
        with open("/proc/self/cgroup") as handle:
            group = next(
                (line.split(":", 2)[2].strip() for line in handle if line.startswith("0::")), None
            )
    except OSError:
        return None
    if group is None:
        return None
    folder = "/sys/fs/cgroup" + group.rstrip("/")
    limit, used = _read_int(folder + "/memory.max"), _read_int(folder + "/memory.current")
    if limit is None or used is None:
        return None
    return max(limit - used, 0)


def _address_space_left() -> int | None:
    """What ``RLIMIT_AS`` still allows this process to map, when it is limited."""
    try:
        import resource
    except ImportError:
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = 0
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmSize:"):
                    mapped = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return max(soft - mapped, 0)


def available_memory() -> tuple[int, str]:
    """Bytes this process can still use, and where the number comes from."""
    found = [
        (value, source)
        for value, source in (
            (_meminfo_available(), "MemAvailable"),
            (_cgroup_headroom(), "the cgroup's limit"),
            (_address_space_left(), "RLIMIT_AS"),
        )
        if value is not None
    ]
    if not found:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
            return int(pages), "free physical memory"
        except (ValueError, OSError, AttributeError):
            return UNKNOWN_AVAILABLE, "assumed; the platform does not say"
    return min(found)


@dataclass(frozen=True)
class Budget:
    """The bytes a step may allocate, and why that many (for the error message)."""

    limit: int
    origin: str
    chosen: bool = False  # set by the user, so no hint about how to set it

    def fits(self, needed: float) -> bool:
        return needed <= self.limit

    def require(self, needed: float, what: str) -> None:
        """Raise one line when ``what`` would need more than the budget."""
        if needed > self.limit:
            raise MemoryBudgetError(
                f"{what} needs {format_size(needed)}, over the memory budget of "
                f"{format_size(self.limit)} ({self.origin})",
                remedy=None if self.chosen else Remedy("max_memory", purpose="to change it"),
            )


def resolve(max_memory: Budget | int | str | None = None) -> Budget:
    """The budget a step works under: the one given, or half of what is available now."""
    if isinstance(max_memory, Budget):
        return max_memory
    if max_memory is not None:
        size = parse_size(max_memory)
        return Budget(size, "as set", chosen=True)
    available, source = available_memory()
    return Budget(
        int(available * DEFAULT_FRACTION),
        f"{DEFAULT_FRACTION:.0%} of the {format_size(available)} available, by {source}",
    )


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

    def values(self, batch: int, copies: int) -> float:
        """Every value held ``copies`` times at ``batch``, plus one layer's scratch."""
        return copies * (batch * self.per_item + self.fixed) + batch * self.scratch_per_item


def _count(shape: Shape) -> int:
    return math.prod(shape) if shape else 1


def footprint(graph: Graph, params: Mapping[str, list[Shape]]) -> Footprint:
    """The footprint of ``graph`` from its inferred value shapes and parameter shapes."""
    first = next(iter(graph.inputs.values()), None)
    declared = first[0] if first else 1
    per_item, fixed, largest = 0.0, 0, 0.0
    for shape in graph.shapes.values():
        if shape and shape[0] == declared:
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
        batch = ins[0][0] if ins[0] and ins[0][0] == declared else 1
        size = FLOAT32 * floats / batch
        if size > scratch:
            scratch, scratch_layer = size, node.name
    return Footprint(
        params=FLOAT32 * sum(layer_params),
        largest_params=FLOAT32 * max(layer_params),
        per_item=per_item,
        fixed=fixed,
        scratch_per_item=scratch,
        scratch_layer=scratch_layer,
        largest_per_item=largest,
    )


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
