"""Sliding-window geometry with Caffe's exact rules, shared by shape inference and both back ends.

Pooling rounds up by default and drops a last window that would start inside the padding; AVE
pooling divides by the window clipped to the padded input, computed before clipping to the image.
Keeping these in one place is what stops the PyTorch and ONNX paths from ever disagreeing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..proto import caffe_pb2

PoolingParameter = caffe_pb2.PoolingParameter


def _per_axis(values: list[int], n: int, default: int, what: str) -> tuple[int, ...]:
    if not values:
        return (default,) * n
    if len(values) == 1:
        return (int(values[0]),) * n
    if len(values) != n:
        raise ValueError(f"{what} has {len(values)} values for {n} spatial axes")
    return tuple(int(v) for v in values)


def _both(param: object, name: str, n_spatial: int, plain_given: bool) -> None:
    """Caffe's rule for ``x_h``/``x_w``: both or neither, never with ``x``, 2-D only."""
    if n_spatial != 2:
        raise ValueError(f"{name}_h/{name}_w need exactly 2 spatial axes")
    if plain_given:
        raise ValueError(f"give {name} or {name}_h/{name}_w, not both")
    if not (param.HasField(f"{name}_h") and param.HasField(f"{name}_w")):  # type: ignore[attr-defined]
        raise ValueError(f"{name}_h and {name}_w must be given together")


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    def output(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Convolution output size per spatial axis (Caffe rounds down)."""
        return tuple(
            (size + 2 * p - (d * (k - 1) + 1)) // s + 1
            for size, k, s, p, d in zip(sizes, self.kernel, self.stride, self.pad, self.dilation)
        )

    def deconv_output(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Deconvolution (transposed convolution) output size per spatial axis."""
        return tuple(
            s * (size - 1) + d * (k - 1) + 1 - 2 * p
            for size, k, s, p, d in zip(sizes, self.kernel, self.stride, self.pad, self.dilation)
        )


def conv_geometry(param: caffe_pb2.ConvolutionParameter, n_spatial: int) -> ConvGeometry:
    """Kernel, stride, pad and dilation per spatial axis, read as Caffe's conv layers read them."""
    if param.HasField("kernel_h") or param.HasField("kernel_w"):
        if n_spatial != 2:
            raise ValueError("kernel_h/kernel_w need exactly 2 spatial axes")
        if not (param.HasField("kernel_h") and param.HasField("kernel_w")):
            raise ValueError("kernel_h and kernel_w must be given together")
        if param.kernel_size:
            raise ValueError("give kernel_size or kernel_h/kernel_w, not both")
        kernel = (int(param.kernel_h), int(param.kernel_w))
    else:
        if not param.kernel_size and n_spatial:  # Caffe allows none for 0 spatial axes
            raise ValueError("kernel_size (or kernel_h and kernel_w) is required")
        kernel = _per_axis(list(param.kernel_size), n_spatial, 1, "kernel_size")
    if param.HasField("stride_h") or param.HasField("stride_w"):
        _both(param, "stride", n_spatial, bool(param.stride))
        stride = (int(param.stride_h), int(param.stride_w))
    else:
        stride = _per_axis(list(param.stride), n_spatial, 1, "stride")
    if param.HasField("pad_h") or param.HasField("pad_w"):
        _both(param, "pad", n_spatial, bool(param.pad))
        pad = (int(param.pad_h), int(param.pad_w))
    else:
        pad = _per_axis(list(param.pad), n_spatial, 0, "pad")
    dilation = _per_axis(list(param.dilation), n_spatial, 1, "dilation")
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride) or any(d <= 0 for d in dilation):
        raise ValueError("kernel, stride and dilation must be positive")
    return ConvGeometry(kernel, stride, pad, dilation)


@dataclass(frozen=True)
class PoolAxis:
    """One spatial axis of a pooling window: input size, kernel, stride, pad and Caffe's output."""

    size: int
    kernel: int
    stride: int
    pad: int
    out: int

    @property
    def pad_end(self) -> int:
        """Padding after the input that makes floor-mode pooling produce exactly ``out`` windows."""
        return max((self.out - 1) * self.stride + self.kernel - self.size - self.pad, 0)

    def divisors(self) -> list[int]:
        """AVE divisor per output index: the window clipped to ``[-pad, size + pad)``."""
        out = []
        for o in range(self.out):
            start = o * self.stride - self.pad
            end = min(start + self.kernel, self.size + self.pad)
            out.append(end - start)
        return out

    @property
    def overhangs(self) -> bool:
        """True when some window reaches past the padded input, so its divisor is smaller."""
        return self.pad_end > self.pad


@dataclass(frozen=True)
class PoolGeometry:
    method: int  # PoolingParameter.MAX / AVE / STOCHASTIC
    axes: tuple[PoolAxis, PoolAxis]
    global_pooling: bool

    @property
    def kernel(self) -> tuple[int, int]:
        return (self.axes[0].kernel, self.axes[1].kernel)

    @property
    def stride(self) -> tuple[int, int]:
        return (self.axes[0].stride, self.axes[1].stride)

    @property
    def pad_begin(self) -> tuple[int, int]:
        return (self.axes[0].pad, self.axes[1].pad)

    @property
    def pad_end(self) -> tuple[int, int]:
        return (self.axes[0].pad_end, self.axes[1].pad_end)

    @property
    def out(self) -> tuple[int, int]:
        return (self.axes[0].out, self.axes[1].out)

    @property
    def needs_divisor_fix(self) -> bool:
        """AVE only: True when zero padding plus a fixed k*k divisor would not match Caffe."""
        return any(a.overhangs for a in self.axes)


def pool_geometry(param: PoolingParameter, height: int, width: int) -> PoolGeometry:
    """Caffe's PoolingLayer::Reshape for one input size."""
    if param.global_pooling:
        if (
            param.HasField("kernel_size")
            or param.HasField("kernel_h")
            or param.HasField("kernel_w")
        ):
            raise ValueError("global_pooling takes no kernel size")
        kernel = (height, width)
    elif param.HasField("kernel_size"):
        if param.HasField("kernel_h") or param.HasField("kernel_w"):
            raise ValueError("give kernel_size or kernel_h/kernel_w, not both")
        kernel = (int(param.kernel_size),) * 2
    elif param.HasField("kernel_h") and param.HasField("kernel_w"):
        kernel = (int(param.kernel_h), int(param.kernel_w))
    else:
        raise ValueError("kernel_size (or kernel_h and kernel_w) is required")
    if param.HasField("pad_h") or param.HasField("pad_w"):
        _both(param, "pad", 2, param.HasField("pad"))
        pad = (int(param.pad_h), int(param.pad_w))
    else:
        pad = (int(param.pad),) * 2
    if param.HasField("stride_h") or param.HasField("stride_w"):
        _both(param, "stride", 2, param.HasField("stride"))
        stride = (int(param.stride_h), int(param.stride_w))
    else:
        stride = (int(param.stride),) * 2
    if param.global_pooling and (any(pad) or any(s != 1 for s in stride)):
        raise ValueError("global_pooling requires pad 0 and stride 1")
    if any(k <= 0 for k in kernel) or any(s <= 0 for s in stride):
        raise ValueError("kernel and stride must be positive")
    if any(p >= k for p, k in zip(pad, kernel)):
        raise ValueError(f"pad {list(pad)} must be smaller than kernel {list(kernel)}")
    ceil = (
        param.ceil_mode
        if param.HasField("ceil_mode")  # a fork's field (docs/forks.md): it overrides round_mode
        else param.round_mode == PoolingParameter.CEIL
    )
    any_pad = any(pad)
    # darknet2caffe's pooling (PoolingParameter.odd_span_extra) tests the height's kernel and
    # stride and adds the extra window on both axes.
    extra = int(param.odd_span_extra and (kernel[0] - stride[0]) % 2 == 1)
    axes = []
    for size, k, s, p in zip((height, width), kernel, stride, pad):
        span = size + 2 * p - k
        if span < 0:
            raise ValueError(f"kernel {k} (pad {p}) is larger than the input size {size}")
        out = (-(-span // s) if ceil else span // s) + 1 + extra
        if extra and not any_pad and (out - 1) * s >= size:
            raise ValueError("odd_span_extra: the extra window would start past the input")
        if any_pad and (out - 1) * s >= size + p:
            out -= 1  # the last window would start inside the padding
        axes.append(PoolAxis(size, k, s, p, out))
    return PoolGeometry(int(param.pool), (axes[0], axes[1]), bool(param.global_pooling))


# The torch and ONNX Pooling converters share this check.
def unsupported_pooling(node: object) -> str | None:
    """STOCHASTIC pooling"""
    param = node.param  # type: ignore[attr-defined]
    if param.pooling_param.pool not in (PoolingParameter.MAX, PoolingParameter.AVE):
        return "only MAX and AVE pooling have a deterministic inference form"
    return None


def canonical_axis(axis: int, ndim: int, what: str = "axis") -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end; out of range is an error."""
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what} {axis} is out of range for a {ndim}-D blob")
    return axis + ndim if axis < 0 else axis
