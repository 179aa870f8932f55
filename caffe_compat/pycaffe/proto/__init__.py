"""``caffe.proto``: the protobuf bindings (``caffe_pb2``), caffe-compat's own generated module."""

from __future__ import annotations

import sys

from ...proto import caffe_pb2

# ``import caffe_compat.pycaffe.proto.caffe_pb2`` finds the very same module object.
sys.modules.setdefault(__name__ + ".caffe_pb2", caffe_pb2)

__all__ = ["caffe_pb2"]
