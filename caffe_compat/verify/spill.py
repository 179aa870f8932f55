"""A judge's values on disk: verify's streamed mode for nets whose values do not fit in memory.

Where one item's values (every blob of the forward, 1 to 4 GiB for PSPNet, ICNet or dilated
VGG-16s at their fixed input sizes) cannot be held beside the weights, the float64 judge hands
each value to ``SpilledValues.put`` as soon as it is computed, and only the values its forward
still reads stay in memory. Each value is written in float32 where float32 holds its range
(what ``as_float32`` keeps in memory otherwise), with its largest magnitude kept here, since
error scales read magnitudes of every value. Reading a value back (``values[name]``) loads that
one array; the comparison reads them one at a time.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from ..budget import format_size
from ..errors import CaffeCompatError
from .compare import _largest

FLOAT32_MAX = float(np.finfo(np.float32).max)


class SpilledValues(Mapping[str, np.ndarray]):
    """{value name: array} whose arrays live in ``folder`` (one ``.npy`` file each)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Path] = {}
        self._sizes: dict[str, np.ndarray] = {}
        self.written = 0  # bytes on disk

    def put(self, name: str, array: np.ndarray) -> None:
        """Write ``array`` (float64 rounded to float32 where float32 holds its magnitude)."""
        array = np.asarray(array)
        if array.dtype == np.float64 and array.size:
            largest = max(float(np.max(array)), -float(np.min(array)))  # nan: not below
            if largest < FLOAT32_MAX:
                array = array.astype(np.float32)
        path = self.folder / f"{len(self._files)}.npy"
        np.save(path, array, allow_pickle=False)
        self._files[name] = path
        self._sizes[name] = np.asarray(_largest(array))
        self.written += array.nbytes

    def magnitudes(self) -> dict[str, np.ndarray]:
        """max |v| of each value as a 0-d array (what ``error_scales`` reads), without loading."""
        return dict(self._sizes)

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self._files[name], allow_pickle=False)

    def __contains__(self, name: object) -> bool:
        return name in self._files

    def __iter__(self) -> Iterator[str]:
        return iter(self._files)

    def __len__(self) -> int:
        return len(self._files)


def require_disk(folder: str | Path, needed: float, what: str) -> None:
    """Refuse (one line) before writing ``needed`` bytes where the disk has less free."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise CaffeCompatError(
            f"{what} writes {format_size(needed)} of temporary files to {folder}, but only "
            f"{format_size(free)} is free there (set TMPDIR to a larger disk)"
        )


def magnitudes(values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """max |v| of each value as a 0-d array, read from memory or from a spilled store."""
    if isinstance(values, SpilledValues):
        return values.magnitudes()
    return {name: np.asarray(_largest(array)) for name, array in values.items()}
