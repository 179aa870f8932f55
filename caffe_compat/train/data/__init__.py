"""Caffe's training data layers (Data, ImageData, HDF5Data) with ``transform_param``, decoded in
worker processes: see sources.py for the record streams, loader.py for the workers."""

from .loader import Feeder, default_workers
from .sources import BatchSource, make_source, sources_of
from .transform import DataTransformer

__all__ = [
    "BatchSource",
    "DataTransformer",
    "Feeder",
    "default_workers",
    "make_source",
    "sources_of",
]
