"""caffe-compat: legacy Caffe models without Caffe."""

__version__ = "0.1.0"
