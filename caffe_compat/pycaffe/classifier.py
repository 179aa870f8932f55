"""``caffe.Classifier``: a Net that classifies images by resizing, cropping or oversampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import io as caffe_io
from .pycaffe import TEST, Net


class Classifier(Net):
    """An image classifier over a deploy net.

    ``image_dims`` is the size inputs are resized to before cropping (default: the net's input
    size, so the whole image is used); ``mean``, ``input_scale``, ``raw_scale`` and
    ``channel_swap`` configure the ``transformer`` (a ``caffe.io.Transformer``).
    """

    def __init__(
        self,
        model_file: str,
        pretrained_file: str,
        image_dims: Sequence[int] | None = None,
        mean: np.ndarray | None = None,
        input_scale: float | None = None,
        raw_scale: float | None = None,
        channel_swap: Sequence[int] | None = None,
    ) -> None:
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = caffe_io.input_transformer(
            in_, self.blobs[in_].data.shape, mean, input_scale, raw_scale, channel_swap
        )
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        if not image_dims:
            image_dims = self.crop_dims
        self.image_dims = image_dims

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class probabilities (N x C) for N H x W x K images.

        With ``oversample`` (default) each image is resized to ``image_dims`` and the predictions
        of its four corner and centre crops and their mirrors are averaged; otherwise only the
        centre crop is used.
        """
        input_ = np.zeros(
            (len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]),
            dtype=np.float32,
        )
        for ix, in_ in enumerate(inputs):
            input_[ix] = caffe_io.resize_image(in_, self.image_dims)
        if oversample:
            input_ = caffe_io.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = np.tile(center, (1, 2))[0] + np.concatenate(
                [-self.crop_dims / 2.0, self.crop_dims / 2.0]
            )
            crop = crop.astype(int)
            input_ = input_[:, crop[0] : crop[2], crop[1] : crop[3], :]
        caffe_in = np.zeros(np.array(input_.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, in_ in enumerate(input_):
            caffe_in[ix] = self.transformer.preprocess(self.inputs[0], in_)
        out = self.forward_all(**{self.inputs[0]: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1))
            predictions = predictions.mean(1)
        return predictions
