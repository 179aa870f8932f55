"""Back ends that turn a caffe_compat Graph into a PyTorch module or an ONNX model.

``converters/torch`` and ``converters/onnx`` hold one file per Caffe layer family with the same
names in both, so each layer's two implementations sit side by side.
"""
