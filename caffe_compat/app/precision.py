"""Which numeric mode a model runs in, and where each mode is refused.

Measured on an H200 (Levi-Hassner age net, batch 1024, prob vs ONNX Runtime CPU): ``exact``
(im2col + GEMM, no cuDNN) 9.5k images/s at 3.6e-6; ``fp32`` (cuDNN, TF32 off) 23.8k at 3.8e-6;
``tf32`` 47.7k at 2.3e-3; ``fp16`` 60k at 3.6e-3. On the CPU every mode computes the same fp32.
A zoo card records ``cuda_precision``, the fastest mode whose parity holds for that model
(``verify --precision`` shows it); models without a card run ``exact``.
"""

from __future__ import annotations

from ..errors import CaffeCompatError

PRECISIONS = ("exact", "fp32", "tf32", "fp16")


def resolve_precision(
    requested: str | None, *, backend: str, device: str, card_default: str = "exact"
) -> str:
    """The mode to run: ``requested``, or the card's CUDA default on CUDA (``exact`` elsewhere);
    modes the back end cannot run are refused in one line."""
    on_cuda = device.startswith("cuda")
    if requested is None:
        return card_default if on_cuda and backend == "torch" else "exact"
    if requested not in PRECISIONS:
        raise CaffeCompatError(
            f"precision must be one of {', '.join(PRECISIONS)}, not {requested!r}"
        )
    if requested in ("tf32", "fp16"):
        if backend != "torch":
            raise CaffeCompatError(
                f"precision {requested} runs on the torch back end only: ONNX Runtime runs our "
                "models in fp32"
            )
        if not on_cuda:
            raise CaffeCompatError(
                f"precision {requested} needs a CUDA device; on the CPU every mode computes fp32"
            )
    return requested
