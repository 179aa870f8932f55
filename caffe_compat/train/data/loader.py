"""Batches of a net's data layers, decoded ahead of the net in worker processes.

A torch ``DataLoader`` over batch numbers: each worker builds whole batches (decode, transform,
stack), so photo decoding runs beside the forward/backward pass instead of inside it, and since a
batch is a pure function of its number, the batches come out identical for any worker count.
LevelDB allows one process per database, so a net reading one decodes in the main process.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ...errors import CaffeCompatError
from .sources import BatchSource

_ERROR = "__error__"


def default_workers() -> int:
    """Worker processes: one per spare core, at most four (decoding photos is light next to a
    convnet's backward pass)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cores or 2) - 1))


class _Batches(Dataset):
    def __init__(self, sources: Sequence[BatchSource]) -> None:
        self.sources = list(sources)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        try:
            for source in self.sources:
                out.update(source.batch(index))
        except CaffeCompatError as exc:
            # Sent back as data: the DataLoader would re-raise it with a traceback as text.
            return {_ERROR: (type(exc), dict(exc.__dict__))}  # type: ignore[dict-item]
        return out


def _raise_if_error(batch: dict) -> dict:
    if _ERROR in batch:
        kind, fields = batch[_ERROR]
        error = kind.__new__(kind)
        error.__dict__.update(fields)
        Exception.__init__(error, str(error))
        raise error
    return batch

    def __len__(self) -> int:  # pragma: no cover - the sampler is endless
        raise TypeError("an endless stream")


class _From(Sampler):
    def __init__(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


class Feeder:
    """The feeds of one net: ``next()`` gives ``{top: tensor}`` for every data layer, batch
    after batch, starting at batch ``start``."""

    def __init__(
        self, sources: Sequence[BatchSource], *, start: int = 0, workers: int | None = None
    ) -> None:
        self.sources = list(sources)
        self.position = start
        if workers is None:
            workers = default_workers()
        if any(s.in_process for s in self.sources):
            workers = 0
        self.workers = workers
        self._iter: Iterator[dict[str, torch.Tensor]] | None = None

    def shapes(self) -> dict[str, tuple[int, ...]]:
        out: dict[str, tuple[int, ...]] = {}
        for source in self.sources:
            out.update(source.top_shapes())
        return out

    def _start(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.workers == 0:
            dataset = _Batches(self.sources)
            return (
                {k: v if k == _ERROR else torch.from_numpy(v) for k, v in dataset[i].items()}
                for i in itertools.count(self.position)
            )
        loader = DataLoader(
            _Batches(self.sources),
            batch_size=None,
            sampler=_From(self.position),
            num_workers=self.workers,
            prefetch_factor=2,
            persistent_workers=False,
        )
        return iter(loader)

    def next(self) -> dict[str, torch.Tensor]:
        if not self.sources:
            return {}
        if self._iter is None:
            self._iter = self._start()
        batch = _raise_if_error(next(self._iter))
        self.position += 1
        return batch

    def seek(self, position: int) -> None:
        """Continue from batch ``position`` (a restored run)."""
        if position != self.position:
            self.close()
            self.position = position

    def close(self) -> None:
        """Stop the workers (they are restarted by the next ``next()``)."""
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iter = None
