"""``caffe.io``: BVLC pycaffe's preprocessing, image loading and proto/array conversions.

Semantics follow BVLC's master branch, including ``Transformer.set_mean`` resizing an elementwise
mean of another height and width to the input (PR 5719), and the fact that ``preprocess`` works in
place on float32 input when no step makes a copy. Two things are done as they were meant with
today's libraries: images load with ``as_gray`` (scikit-image renamed ``as_grey``), and resizing
passes ``anti_aliasing=False`` explicitly, since scikit-image 0.15 started smoothing before
downscaling by default, which Caffe-era results never had.

scikit-image (and SciPy, for inputs that are neither 1- nor 3-channel) are imported when needed;
without them these functions raise ImportError naming the package.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..proto import caffe_pb2

__all__ = [
    "Transformer",
    "array_to_blobproto",
    "array_to_datum",
    "arraylist_to_blobprotovector_str",
    "blobproto_to_array",
    "blobprotovector_str_to_arraylist",
    "caffe_pb2",
    "datum_to_array",
    "load_image",
    "oversample",
    "resize_image",
]


def _need(module: str, package: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"caffe.io.{what} needs {package}, which is not installed (pip install "
            f"'caffe-compat[pycaffe]', or pip install {package})"
        ) from None


def __getattr__(name: str) -> Any:
    """BVLC's io module also exposed the libraries it imported; some scripts use them."""
    if name == "skimage":
        skimage = _need("skimage", "scikit-image", "skimage")
        _need("skimage.io", "scikit-image", "skimage")
        return skimage
    if name == "resize":
        return _need("skimage.transform", "scikit-image", "resize").resize
    if name == "zoom":
        return _need("scipy.ndimage", "scipy", "zoom").zoom
    raise AttributeError(f"module 'caffe.io' has no attribute {name!r}")


# --- proto / datum / ndarray conversion ----------------------------------------------------------


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """The blob's data (or diff) as a float64 array in its shape (legacy 4-D dims if present)."""
    data = np.array(blob.diff if return_diff else blob.data, dtype=np.float64)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(blob.shape.dim)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """An N-D array (and optionally its diff, same shape, unchecked) as a BlobProto."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(float).ravel().tolist())
    if diff is not None:
        blob.diff.extend(diff.astype(float).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Sequence[np.ndarray]) -> bytes:
    """Serialise a list of arrays as a BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    """The arrays of a serialised BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> caffe_pb2.Datum:
    """A C x H x W array as a Datum: uint8 arrays as bytes, anything else as float_data."""
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel().tolist())
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A Datum's pixels as a C x H x W array (uint8 from bytes, else float64); not its label."""
    if len(datum.data):
        return (
            np.frombuffer(datum.data, dtype=np.uint8)
            .reshape(datum.channels, datum.height, datum.width)
            .copy()
        )
    return (
        np.array(datum.float_data).astype(float).reshape(datum.channels, datum.height, datum.width)
    )


# --- preprocessing --------------------------------------------------------------------------------


class Transformer:
    """Turn H x W x K images into net input (K x H x W) and back, per input blob.

    ``inputs`` maps input names to blob shapes: ``{'data': net.blobs['data'].data.shape}``.
    ``preprocess`` applies, in this order: conversion to float32, resize to the input's height and
    width, transpose, channel swap, raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs: dict[str, Any]) -> None:
        self.inputs = inputs
        self.transpose: dict[str, Any] = {}
        self.channel_swap: dict[str, Any] = {}
        self.raw_scale: dict[str, Any] = {}
        self.mean: dict[str, Any] = {}
        self.input_scale: dict[str, Any] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise Exception(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Format an H' x W' x K image for input ``in_`` (K x H x W, float32)."""
        self._check_input(in_)
        caffe_in = data.astype(np.float32, copy=False)
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        if channel_swap is not None:
            caffe_in = caffe_in[channel_swap, :, :]
        if raw_scale is not None:
            caffe_in *= raw_scale
        if mean is not None:
            caffe_in -= mean
        if input_scale is not None:
            caffe_in *= input_scale
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Undo ``preprocess`` (except the resize) on a K x H x W array."""
        self._check_input(in_)
        decaf_in = data.copy().squeeze()
        transpose = self.transpose.get(in_)
        channel_swap = self.channel_swap.get(in_)
        raw_scale = self.raw_scale.get(in_)
        mean = self.mean.get(in_)
        input_scale = self.input_scale.get(in_)
        if input_scale is not None:
            decaf_in /= input_scale
        if mean is not None:
            decaf_in += mean
        if raw_scale is not None:
            decaf_in /= raw_scale
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Dimension order, e.g. (2, 0, 1) turns H x W x K into K x H x W."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception(
                "Transpose order needs to have the same number of dimensions as the input."
            )
        self.transpose[in_] = order

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order after the transpose, e.g. (2, 1, 0) turns RGB into BGR."""
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception(
                "Channel swap needs to have the same number of dimensions as the input channels."
            )
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply raw input by ``scale`` before the mean (255 for [0, 1] images and ImageNet)."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean to subtract: per channel (1-D) or elementwise (K x H x W, resized if it differs)."""
        self._check_input(in_)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1, *ms)
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            if ms != self.inputs[in_][1:]:
                in_shape = self.inputs[in_][1:]
                low, high = mean.min(), mean.max()
                normal = (mean - low) / (high - low)
                resized = resize_image(normal.transpose((1, 2, 0)), in_shape[1:])
                mean = resized.transpose((2, 0, 1)) * (high - low) + low
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply by ``scale`` after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# --- image IO -------------------------------------------------------------------------------------


def input_transformer(
    name: str,
    shape: Sequence[int],
    mean: np.ndarray | None = None,
    input_scale: float | None = None,
    raw_scale: float | None = None,
    channel_swap: Sequence[int] | None = None,
) -> Transformer:
    """The Transformer caffe.Classifier and caffe.Detector build for their one input: HxWxK
    images to KxHxW, then each preprocessing step the caller asked for."""
    transformer = Transformer({name: shape})
    transformer.set_transpose(name, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(name, mean)
    if input_scale is not None:
        transformer.set_input_scale(name, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(name, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(name, channel_swap)
    return transformer


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image as float32 in [0, 1]: H x W x 3 (RGB) or, with ``color=False``, H x W x 1."""
    skimage = _need("skimage", "scikit-image", "load_image")
    skimage_io = _need("skimage.io", "scikit-image", "load_image")
    img = skimage.img_as_float(skimage_io.imread(filename, as_gray=not color)).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an H x W x K image to ``new_dims`` (height, width), linear by default.

    1- and 3-channel images are scaled to [0, 1], resized by scikit-image and scaled back;
    other channel counts go through ``scipy.ndimage.zoom``. A constant image stays constant.
    """
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if im_max > im_min:
            transform = _need("skimage.transform", "scikit-image", "resize_image")
            im_std = (im - im_min) / (im_max - im_min)
            resized_std = transform.resize(
                im_std, new_dims, order=interp_order, mode="constant", anti_aliasing=False
            )
            resized_im = resized_std * (im_max - im_min) + im_min
        else:
            ret = np.empty((new_dims[0], new_dims[1], im.shape[-1]), dtype=np.float32)
            ret.fill(im_min)
            return ret
    else:
        ndimage = _need("scipy.ndimage", "scipy", "resize_image")
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = ndimage.zoom(im, (*scale, 1), order=interp_order)
    return resized_im.astype(np.float32)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """Ten crops per image: four corners and the centre, then the same five mirrored.

    Returns (10 * N) x H x W x K float32; all images must share the first one's shape.
    """
    im_shape = np.array(images[0].shape)
    crop = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    boxes = np.empty((5, 4), dtype=int)
    corners = [(y, x) for y in (0, im_shape[0] - crop[0]) for x in (0, im_shape[1] - crop[1])]
    for index, (y, x) in enumerate(corners):
        boxes[index] = (y, x, y + crop[0], x + crop[1])
    boxes[4] = np.concatenate([im_center - crop / 2.0, im_center + crop / 2.0])
    boxes = np.tile(boxes, (2, 1))
    crops = np.empty((10 * len(images), crop[0], crop[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for y0, x0, y1, x1 in boxes:
            crops[ix] = im[y0:y1, x0:x1, :]
            ix += 1
        crops[ix - 5 : ix] = crops[ix - 5 : ix, :, ::-1, :]  # the second five are mirrored
    return crops
