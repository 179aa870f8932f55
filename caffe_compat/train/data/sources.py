"""Caffe's training data layers as batch sources: Data (LMDB/LevelDB), ImageData, HDF5Data.

A source is a stream of records cycling through its data (Caffe's "Restarting data prefetching
from start"), cut into batches of ``batch_size``. Batch ``k`` of the stream is a pure function of
``k``, the solver's ``random_seed`` and the layer: the shuffled order of each pass, ``rand_skip``
and every random crop and mirror are drawn from generators keyed by those, so batches decode in
any order in any number of worker processes, and a run restored from a snapshot continues the
stream where it stopped (Caffe's own layers start again from the first record).

The top shapes come from the first record, as Caffe's ``DataLayerSetUp`` reads one; each batch
takes its shape from its own first record (Caffe's reshape per batch), and the others must match.
"""

from __future__ import annotations

import bisect
import os
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ...app.images import MAX_PIXELS, decode_photo, read_photo_bytes
from ...errors import CaffeCompatError, FileFormatError
from ...proto import caffe_pb2
from .datum import decode_datum
from .db import Database, open_database
from .transform import DataTransformer, Where

MAX_LIST_LINES = 1 << 26  # a list file of 67M lines is damage or a mistake
MAX_LIST_BYTES = 1 << 32


def _seed_key(layer: str, phase: str) -> int:
    return zlib.crc32(f"{phase}:{layer}".encode())


class BatchSource:
    """The batches one data layer produces."""

    in_process = False  # True when it must be read in the main process (LevelDB)

    def __init__(self, layer: caffe_pb2.LayerParameter, phase: str, seed: int, path: str | None):
        self.layer = layer.name
        self.tops = list(layer.top)
        self.phase = phase
        self.seed = int(seed)
        self.where = Where(layer.name, layer.type, path)
        self.key = _seed_key(layer.name, phase)
        self.batch_size = 0
        self.count = 0  # records in one pass
        self.skip = 0  # rand_skip's draw
        self.shuffle = False

    # --- the record stream ---------------------------------------------------------------------

    def _order(self, epoch: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        rng = np.random.default_rng((self.seed, self.key, 1, epoch))
        return rng.permutation(self.count)

    def records(self, batch: int) -> list[tuple[int, int]]:
        """(global position, record index) of each item of batch ``batch``."""
        first = self.skip + batch * self.batch_size
        out, orders = [], {}
        for position in range(first, first + self.batch_size):
            epoch, offset = divmod(position, self.count)
            if epoch not in orders:
                orders[epoch] = self._order(epoch)
            order = orders[epoch]
            out.append((position, int(order[offset]) if order is not None else offset))
        return out

    def item_rng(self, position: int) -> np.random.Generator:
        return np.random.default_rng((self.seed, self.key, 2, position))

    def _draw_skip(self, rand_skip: int) -> None:
        if rand_skip:
            self.skip = int(np.random.default_rng((self.seed, self.key, 3)).integers(rand_skip))
            if self.skip >= self.count:
                raise self.where.error(f"rand_skip drew {self.skip}: not enough records to skip")

    # --- to implement --------------------------------------------------------------------------

    def top_shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def batch(self, index: int) -> dict[str, np.ndarray]:
        raise NotImplementedError


class _ImageBatches(BatchSource):
    """Shared by Data and ImageData: decode item, transform, stack; labels as float."""

    transformer: DataTransformer

    def load(self, record: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def describe(self, record: int) -> str:
        raise NotImplementedError

    def top_shapes(self) -> dict[str, tuple[int, ...]]:
        item, _ = self.load(self.records(0)[0][1])
        shapes = {self.tops[0]: (self.batch_size, *self.transformer.output_shape(item.shape))}
        if len(self.tops) > 1:
            shapes[self.tops[1]] = (self.batch_size,)
        return shapes

    def batch(self, index: int) -> dict[str, np.ndarray]:
        items, labels, shape = [], [], None
        for position, record in self.records(index):
            item, label = self.load(record)
            if shape is None:
                shape = item.shape
            elif item.shape != shape:
                raise self.where.error(
                    f"{self.describe(record)} is {'x'.join(map(str, item.shape))} but the batch "
                    f"began with {'x'.join(map(str, shape))}: items of one batch must match "
                    "(resize them, or use batch_size 1)"
                )
            rng = self.item_rng(position) if self.transformer.needs_random else None
            items.append(self.transformer(item, rng))
            labels.append(label)
        out = {self.tops[0]: np.stack(items)}
        if len(self.tops) > 1:
            out[self.tops[1]] = np.asarray(labels, dtype=np.float32)
        return out


class DataSource(_ImageBatches):
    """Caffe's Data layer: Datum records from LMDB or LevelDB, in key order."""

    def __init__(self, layer, phase, seed, path, *, max_pixels: int = MAX_PIXELS):
        super().__init__(layer, phase, seed, path)
        p = layer.data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.where.error("data_param.batch_size must be > 0")
        if not p.source:
            raise self.where.error("data_param.source is not set")
        self.transformer = DataTransformer(layer.transform_param, phase, self.where)
        backend = caffe_pb2.DataParameter.DB.Name(p.backend)
        self.db: Database = open_database(p.source, backend)
        self.in_process = self.db.in_process
        self.count = len(self.db.keys)
        if not self.count:
            raise FileFormatError(f"the {backend} database is empty", path=p.source)
        self._draw_skip(int(p.rand_skip))
        self.max_pixels = max_pixels

    def describe(self, record: int) -> str:
        return f"{self.db.path}: record {self.db.keys[record]!r}"

    def load(self, record: int) -> tuple[np.ndarray, int]:
        key = self.db.keys[record]
        decoded = decode_datum(
            self.db.get(key),
            self.describe(record),
            force_color=self.transformer.force_color,
            force_gray=self.transformer.force_gray,
            max_pixels=self.max_pixels,
        )
        return decoded.item, decoded.label


def read_list(path: str, where: Where, *, labels: bool) -> list[tuple[str, int]]:
    """A list file: ``path label`` per line (split at the last space, as Caffe does), or one
    path per line (HDF5Data)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_LIST_BYTES + 1)
    except FileNotFoundError:
        raise where.error(f"the list file {path} does not exist") from None
    except OSError as exc:
        raise where.error(f"cannot read the list file {path} ({exc.strerror})") from None
    if len(raw) > MAX_LIST_BYTES:
        raise FileFormatError(f"list file over {MAX_LIST_BYTES:,} bytes", path=path)
    text = raw.decode("utf-8", "surrogateescape")
    out: list[tuple[str, int]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if number > MAX_LIST_LINES:
            raise FileFormatError(f"over {MAX_LIST_LINES:,} lines", path=path)
        if not labels:
            name = line.strip()
            if name:
                out.append((name, 0))
            continue
        if not line.strip():
            continue
        cut = line.rfind(" ")
        token = line[cut + 1 :].strip()
        if cut < 0 or not token.lstrip("+-").isdigit():
            raise FileFormatError(
                f"line {number}: expected 'IMAGE LABEL' (a space, then an integer label), got "
                f"{line[:80]!r}",
                path=path,
            )
        out.append((line[:cut], int(token)))
    if not out:
        raise FileFormatError("the list file names no images", path=path)
    return out


class ImageDataSource(_ImageBatches):
    """Caffe's ImageData layer: image files from a list, resized to ``new_height x new_width``
    (bilinear, OpenCV's default, as Caffe's ``ReadImageToCVMat``), colour or gray."""

    def __init__(self, layer, phase, seed, path, *, max_pixels: int = MAX_PIXELS):
        super().__init__(layer, phase, seed, path)
        p = layer.image_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.where.error("image_data_param.batch_size must be > 0")
        if len(self.tops) != 2:
            raise self.where.error("ImageData has two tops (data and label)")
        self.new_size = (int(p.new_height), int(p.new_width))
        if (self.new_size[0] > 0) != (self.new_size[1] > 0):
            raise self.where.error("new_height and new_width must be set together")
        self.is_color = bool(p.is_color)
        self.root = p.root_folder
        self.lines = read_list(p.source, self.where, labels=True)
        self.count = len(self.lines)
        self.shuffle = bool(p.shuffle)
        self.transformer = DataTransformer(layer.transform_param, phase, self.where)
        self._draw_skip(int(p.rand_skip))
        self.max_pixels = max_pixels

    def describe(self, record: int) -> str:
        return f"image {self.root + self.lines[record][0]!r}"

    def load(self, record: int) -> tuple[np.ndarray, int]:
        import cv2

        name, label = self.lines[record]
        full = self.root + name  # Caffe concatenates; root_folder carries its own slash
        try:
            image = decode_photo(
                read_photo_bytes(full),
                full,
                max_pixels=self.max_pixels,
                mode="color" if self.is_color else "gray",
            )
        except CaffeCompatError as exc:
            raise self.where.error(f"{full}: {exc.reason}") from None
        if self.new_size[0] > 0:
            image = cv2.resize(image, (self.new_size[1], self.new_size[0]))
        item = image[None] if image.ndim == 2 else image.transpose(2, 0, 1)
        return item, label


class HDF5DataSource(BatchSource):
    """Caffe's HDF5Data layer: a list of .h5 files, each holding one dataset per top with rows
    along the first axis; rows run through the files in turn (shuffled files and rows with
    ``shuffle``). No transform: Caffe applies none to HDF5 data."""

    def __init__(self, layer, phase, seed, path):
        super().__init__(layer, phase, seed, path)
        p = layer.hdf5_data_param
        self.batch_size = int(p.batch_size)
        if self.batch_size <= 0:
            raise self.where.error("hdf5_data_param.batch_size must be > 0")
        # Caffe reads whitespace-separated names (``source_file >> line``).
        self.files = [
            token
            for name, _ in read_list(p.source, self.where, labels=False)
            for token in name.split()
        ]
        self.shuffle = bool(p.shuffle)
        self.rows: list[int] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        for name in self.files:
            self.rows.append(self._inspect(name))
        self.count = sum(self.rows)
        self._cache: tuple[str, dict[str, np.ndarray]] | None = None

    def _inspect(self, name: str) -> int:
        """Rows of one file, checking its datasets against the others' before any read."""
        import h5py

        from ...io.hdf5 import _check_dataset, _check_links

        where: dict[str, Any] = {
            "path": name,
            "layer": self.layer,
            "layer_type": self.where.layer_type,
        }
        try:
            with h5py.File(name, "r") as handle:
                _check_links(handle, name)
                rows = None
                for top in self.tops:
                    if top not in handle or not isinstance(handle[top], h5py.Dataset):
                        raise FileFormatError(f"no dataset {top!r} for top {top!r}", **where)
                    dataset = handle[top]
                    _check_dataset(
                        dataset, os.stat(name).st_size, {**where, "blob": top}, kinds="fiub"
                    )
                    if dataset.ndim < 1 or dataset.shape[0] == 0:
                        raise FileFormatError(f"dataset {top!r} has no rows", **where)
                    if rows is not None and dataset.shape[0] != rows:
                        raise FileFormatError(
                            f"dataset {top!r} has {dataset.shape[0]} rows, the others {rows}",
                            **where,
                        )
                    rows = int(dataset.shape[0])
                    shape = tuple(int(d) for d in dataset.shape[1:])
                    if self.shapes.setdefault(top, shape) != shape:
                        raise FileFormatError(
                            f"dataset {top!r} rows are {list(shape)}, other files' "
                            f"{list(self.shapes[top])}",
                            **where,
                        )
                return int(rows or 0)
        except CaffeCompatError:
            raise
        except FileNotFoundError:
            raise FileFormatError("no such HDF5 file (named in the list file)", **where) from None
        except (OSError, KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise FileFormatError(f"not a readable HDF5 file ({exc})", **where) from None

    def top_shapes(self) -> dict[str, tuple[int, ...]]:
        return {top: (self.batch_size, *self.shapes[top]) for top in self.tops}

    def _load(self, name: str) -> dict[str, np.ndarray]:
        import h5py

        if self._cache is None or self._cache[0] != name:
            with h5py.File(name, "r") as handle:
                arrays = {top: np.asarray(handle[top][()], dtype=np.float32) for top in self.tops}
            self._cache = (name, arrays)
        return self._cache[1]

    def _file_order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.files)))
        rng = np.random.default_rng((self.seed, self.key, 4, epoch))
        return [int(i) for i in rng.permutation(len(self.files))]

    def batch(self, index: int) -> dict[str, np.ndarray]:
        out = {top: np.empty((self.batch_size, *self.shapes[top]), np.float32) for top in self.tops}
        first = index * self.batch_size
        plans: dict[int, tuple[list[int], list[int]]] = {}
        rows: dict[tuple[int, int], np.ndarray] = {}
        for slot, position in enumerate(range(first, first + self.batch_size)):
            epoch, offset = divmod(position, self.count)
            if epoch not in plans:
                order = self._file_order(epoch)
                plans[epoch] = (order, np.cumsum([self.rows[i] for i in order]).tolist())
            order, ends = plans[epoch]
            turn = bisect.bisect_right(ends, offset)
            row = offset - (ends[turn - 1] if turn else 0)
            file_index = order[turn]
            if self.shuffle:
                if (epoch, turn) not in rows:
                    rng = np.random.default_rng((self.seed, self.key, 5, epoch, turn))
                    rows[epoch, turn] = rng.permutation(self.rows[file_index])
                row = int(rows[epoch, turn][row])
            arrays = self._load(self.files[file_index])
            for top in self.tops:
                out[top][slot] = arrays[top][row]
        return out


def _source_class(layer_type: str) -> type[BatchSource] | None:
    """The class the registry names for streaming this type's batches (``batch_source``)."""
    import importlib

    from ... import registry

    named = registry.facts(layer_type).batch_source
    if not named:
        return None
    module, _, name = named.partition(":")
    return getattr(importlib.import_module(module), name)


def make_source(
    layer: caffe_pb2.LayerParameter, phase: str, seed: int, path: str | None
) -> BatchSource:
    """The source of one data layer whose type has a ``batch_source`` fact."""
    kind = _source_class(layer.type)
    if kind is None:
        raise CaffeCompatError(
            "caffe-compat train has no reader for this data layer",
            layer=layer.name,
            layer_type=layer.type,
            path=path,
        )
    return kind(layer, phase, seed, path)


def sources_of(
    layers: Sequence[caffe_pb2.LayerParameter], phase: str, seed: int, path: str | None
) -> list[BatchSource]:
    """A source for each data layer among ``layers`` (the net's layers in one phase) that
    training reads; other data layers (DummyData, Input, MemoryData) fill themselves or are
    set by the caller."""
    return [
        make_source(layer, phase, seed, path)
        for layer in layers
        if _source_class(layer.type) is not None
    ]
