"""``CaffeNet``: runs a Graph's layers in Caffe order; any named blob can be returned."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from ... import registry
from ...errors import CaffeCompatError
from ...ir.graph import Graph
from ._base import TorchContext
from .numerics import DEFAULT, apply_precision, check_precision


def module_key(layer_name: str) -> str:
    """A submodule name for a Caffe layer name (torch forbids '.' and the empty name)."""
    return layer_name.replace(".", "_") or "_"


class CaffeNet(nn.Module):
    """A Caffe net as a PyTorch module. Submodules are named after the Caffe layers.

    ``model(x)`` returns the net's output tensor (or a dict when it has several);
    ``model(x, outputs=["fc7", "prob"])`` returns the named blobs (Caffe semantics: the value after
    in-place layers) or values (``"conv1@conv1"``, before the in-place ReLU) as a dict.

    ``precision`` (see ``numerics``) is this model's numeric mode on CUDA: ``exact`` (default),
    ``fp32``, ``tf32`` or ``fp16``; change it with :meth:`set_precision`.
    """

    def __init__(self, graph: Graph, *, precision: str = DEFAULT) -> None:
        super().__init__()
        registry.preflight(graph, ["torch"])
        self.graph = graph
        self.input_names = list(graph.inputs)
        self.output_names = list(graph.outputs)
        self.layers = nn.ModuleDict()
        self._keys: list[str] = []
        for node in graph.nodes:
            entry = registry.lookup(node.type, "torch")
            assert entry is not None  # preflight checked
            key = module_key(node.name)
            while key in self.layers:
                key += "_"
            try:
                self.layers[key] = entry.fn(node, TorchContext(graph, node))
            except CaffeCompatError:
                raise
            except ValueError as exc:
                raise CaffeCompatError(
                    str(exc), path=graph.path, layer=node.name, layer_type=node.type
                ) from None
            self._keys.append(key)
        self._last_use = self._compute_last_use()
        self.precision = DEFAULT
        self.eval()
        if precision != DEFAULT:
            self.set_precision(precision)

    def set_precision(self, precision: str) -> CaffeNet:
        """Switch the numeric mode (this model only); fp16 casts the weights to half."""
        apply_precision(self, check_precision(precision))
        self.precision = precision
        return self

    def stream(
        self, feeds: dict[str, torch.Tensor], values: Iterable[str]
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """Each of ``values`` (value names) as soon as its layer has computed it; nothing is
        held past its last reader, so a caller that consumes values one at a time (verify's
        streamed mode) holds only the live ones. ``forward`` collects them."""
        emit = set(values)
        env: dict[str, torch.Tensor] = dict(feeds)
        for index, (node, key) in enumerate(zip(self.graph.nodes, self._keys)):
            result = self.layers[key](*[env[v] for v in node.inputs])
            if isinstance(result, torch.Tensor):
                result = (result,)
            for value, tensor in zip(node.outputs, result):
                env[value] = tensor
                if value in emit:
                    yield value, tensor
            for value in node.inputs:
                if self._last_use.get(value) == index:
                    env.pop(value, None)

    def _compute_last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for index, node in enumerate(self.graph.nodes):
            for value in node.inputs:
                last[value] = index
        return last

    def _feeds(self, args: Sequence[torch.Tensor], kwargs: dict[str, torch.Tensor]) -> dict:
        if len(args) > len(self.input_names):
            raise TypeError(f"the net takes {len(self.input_names)} input(s), got {len(args)}")
        feeds = dict(zip(self.input_names, args))
        feeds.update(kwargs)
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise TypeError(f"missing input(s): {', '.join(missing)}")
        return feeds

    def forward(
        self,
        *args: torch.Tensor,
        outputs: Iterable[str] | None = None,
        **kwargs: torch.Tensor,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        feeds = self._feeds(args, kwargs)
        half = self.precision == "fp16"
        if half:
            feeds = {k: v.half() for k, v in feeds.items()}
        wanted_names = list(outputs) if outputs is not None else self.output_names
        try:
            wanted = {name: self.graph.resolve(name) for name in wanted_names}
        except KeyError as exc:
            raise KeyError(f"no blob or value named {exc.args[0]!r} in this net") from None
        keep = set(wanted.values())
        env = {name: tensor for name, tensor in feeds.items() if name in keep}
        env.update(self.stream(feeds, keep))
        result = {name: env[value] for name, value in wanted.items()}
        if half:
            result = {name: t.float() if t.is_floating_point() else t for name, t in result.items()}
        if outputs is None and len(self.output_names) == 1:
            return result[next(iter(result))]
        return result


def to_torch(graph: Graph, *, precision: str = DEFAULT) -> CaffeNet:
    """Build the eval-mode PyTorch module for a graph whose weights are attached."""
    return CaffeNet(graph, precision=precision)
