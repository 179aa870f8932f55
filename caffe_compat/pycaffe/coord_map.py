"""``caffe.coord_map``: how the spatial coordinates of one NetSpec top relate to another's, and
``crop``, the Crop layer that aligns them (FCN's skip connections).

A layer's map is ``(axis, a, b)``: output coordinate ``x_out`` and input coordinate ``x_in`` relate
by ``x_out = a * x_in + b`` (per spatial axis, numpy arrays when sizes differ by axis), starting at
``axis``; ``axis`` None means the layer does not move coordinates (pointwise layers). Maps
compose along a path and invert for the way back, as BVLC's module defines them, so crop offsets
agree with nets built by BVLC's own crop function.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .net_spec import Function, Top, layers

Map = tuple[Any, Any, Any]

# Layers whose output coordinate i comes from input coordinate i.
PASS_THROUGH_LAYERS = [
    "AbsVal",
    "BatchNorm",
    "Bias",
    "BNLL",
    "Dropout",
    "Eltwise",
    "ELU",
    "Log",
    "LRN",
    "Exp",
    "MVN",
    "Power",
    "ReLU",
    "PReLU",
    "Scale",
    "Sigmoid",
    "Split",
    "TanH",
    "Threshold",
]
_WINDOWED = ("Convolution", "Pooling", "Im2col")
_LEGACY_FIELDS = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"}


class UndefinedMapException(Exception):
    """The layer has no coordinate map (a walk stops there)."""


class AxisMismatchException(Exception):
    """Two maps act on different first axes and cannot compose."""


def conv_params(fn: Function) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(axis, stride, effective kernel extent, pad) of a windowed layer; Pooling keeps its
    settings beside the others, Convolution-like layers in ``convolution_param``."""
    params = fn.params.get("convolution_param", fn.params)
    if _LEGACY_FIELDS & set(fn.params):
        raise AssertionError("cropping does not support legacy _h/_w params")
    kernel = np.array(params["kernel_size"], ndmin=1)
    dilation = np.array(params.get("dilation", 1), ndmin=1)
    stride = np.array(params.get("stride", 1), ndmin=1)
    pad = np.array(params.get("pad", 0), ndmin=1)
    return params.get("axis", 1), stride, (kernel - 1) * dilation + 1, pad


def crop_params(fn: Function) -> tuple[int, np.ndarray]:
    """(axis, offset) of a Crop layer, with Caffe's defaults (axis 2, offset 0)."""
    params = fn.params.get("crop_param", fn.params)
    return params.get("axis", 2), np.array(params.get("offset", 0), ndmin=1)


def coord_map(fn: Function) -> Map:
    """The map of one layer, output from input (see the module docstring)."""
    kind = fn.type_name
    if kind in _WINDOWED:
        axis, stride, extent, pad = conv_params(fn)
        # output x covers input [x*s - pad, x*s - pad + extent): its centre is the image of x
        return axis, 1 / stride, (pad - (extent - 1) / 2) / stride
    if kind == "Deconvolution":
        axis, stride, extent, pad = conv_params(fn)
        return axis, stride, (extent - 1) / 2 - pad
    if kind in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if kind == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # the axis before the first cropped one
    raise UndefinedMapException(kind)


def compose(base_map: Map, next_map: Map) -> Map:
    """``base`` after ``next``: scales multiply, the further shift scales by ``base``'s."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"axes {ax1} and {ax2}")
    axis = ax2 if ax1 is None else ax1
    return axis, a1 * a2, a1 * b2 + b1


def inverse(coord_map: Map) -> Map:
    """The map back: input from output."""
    axis, a, b = coord_map
    return axis, 1 / a, -b / a


def _bottoms(top: Top) -> tuple:
    """The bottoms a walk follows: all of a layer's, but only the cropped one of a Crop (its
    second bottom only gives the size)."""
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _maps_back(start: Top) -> dict[Top, Map]:
    """Every top reachable backwards from ``start`` through mappable layers, with the map from
    it to ``start``."""
    maps: dict[Top, Map] = {start: (None, 1, 0)}
    frontier = [start]
    while frontier:
        top = frontier.pop()
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return maps


def coord_map_from_to(top_from: Top, top_to: Top) -> Map:
    """The map from ``top_from``'s coordinates to ``top_to``'s, through their nearest common
    ancestor; RuntimeError when they share none through spatial layers."""
    from_maps = _maps_back(top_from)
    to_maps: dict[Top, Map] = {top_to: (None, 1, 0)}
    frontier = [top_to]
    while frontier:
        top = frontier.pop()
        if top in from_maps:
            return compose(to_maps[top], inverse(from_maps[top]))
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(top):
            to_maps[bottom] = compose(to_maps[top], step)
            frontier.append(bottom)
    raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer cutting ``top_from`` to ``top_to``'s extent, its axis and offsets from the
    coordinate map (which must be a pure, non-positive, whole-number shift)."""
    axis, a, b = coord_map_from_to(top_from, top_to)
    assert np.all(np.asarray(a) == 1), f"scale mismatch on crop (a = {a})"
    assert np.all(np.asarray(b) <= 0), f"cannot crop negative offset (b = {b})"
    assert np.all(np.round(b) == b), f"cannot crop noninteger offset (b = {b})"
    offsets = [int(v) for v in -np.round(np.asarray(b, dtype=float)).astype(int).reshape(-1)]
    return layers.Crop(top_from, top_to, crop_param=dict(axis=axis + 1, offset=offsets))
