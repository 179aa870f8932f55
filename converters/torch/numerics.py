"""Numeric modes of a PyTorch model, held by the model itself, never as process-wide flags.

``exact``: Caffe's method on CUDA, im2col + GEMM in fp32 (no cuDNN, no TF32); ``fp32``: cuDNN with
TF32 off (same parity on the nets measured, several times faster); ``tf32``: cuDNN with TF32
convolutions (PyTorch's default, about 1e-3 off); ``fp16``: half-precision weights and
activations, channels_last. On the CPU the first three compute the same thing.

The convolution modules read the mode at call time and pass it to ``torch._convolution``'s own
``cudnn_enabled`` / ``allow_tf32`` arguments, so two models in one process (or one model in two
threads of a server) never see each other's choice, and ``torch.backends`` is never touched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PRECISIONS = ("exact", "fp32", "tf32", "fp16")
DEFAULT = "exact"


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


class CaffeConv(nn.Module):
    """Convolution or transposed convolution over 1 to 3 spatial axes with a per-model mode."""

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[int, ...],
        dilation: tuple[int, ...],
        groups: int,
        transposed: bool,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)
        self.stride, self.padding, self.dilation = list(stride), list(padding), list(dilation)
        self.groups, self.transposed = groups, transposed
        self.precision = DEFAULT

    def _functional(self, x: torch.Tensor) -> torch.Tensor:
        n = x.dim() - 2
        if self.transposed:
            fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[n - 1]
            return fn(
                x, self.weight, self.bias, self.stride, self.padding, 0, self.groups, self.dilation
            )
        fn = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
        return fn(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not x.is_cuda or self.precision == "fp16":
            return self._functional(x)
        return torch._convolution(
            x,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.transposed,
            [0] * (x.dim() - 2),
            self.groups,
            False,  # benchmark
            False,  # deterministic
            self.precision != "exact",  # cudnn_enabled
            self.precision == "tf32",  # allow_tf32
        )


def apply_precision(model: nn.Module, precision: str) -> None:
    """Set the mode on every convolution of ``model`` and cast it (fp16: half, channels_last)."""
    check_precision(precision)
    for module in model.modules():
        if isinstance(module, CaffeConv):
            module.precision = precision
    if precision == "fp16":
        model.half()
        model.to(memory_format=torch.channels_last)
    else:
        model.float()
