"""CTCGreedyDecoder (caffe_ocr): PyTorch, ONNX Runtime and the float64 reference against the
fork's decoding loop written out here (one image, one step at a time), on scores with many ties
(integer levels: the first maximum wins) and on softmax-like scores. OpenCV 4 has no such layer."""

from __future__ import annotations

import numpy as np
import pytest

F32 = np.float32


def greedy_loops(x: np.ndarray, blank: int, merge: bool) -> np.ndarray:
    t_, n_, c_ = x.shape
    blank = c_ - 1 if blank < 0 else blank
    out = np.full((n_, t_, 1, 1), -1.0, F32)
    for n in range(n_):
        prev, kept = -1, []
        for t in range(t_):
            best, top = 0, x[t, n, 0]
            for c in range(1, c_):
                if x[t, n, c] > top:
                    best, top = c, x[t, n, c]
            if best != blank and not (merge and best == prev):
                kept.append(best)
            prev = best
        out[n, : len(kept), 0, 0] = kept
    return out


def decoder_net(blank: int, merge: bool, t: int = 12, n: int = 3, c: int = 5) -> str:
    return (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {t} '
        f"dim: {n} dim: {c} }} }} }}\n"
        f'layer {{ name: "ctc" type: "CTCGreedyDecoder" bottom: "data" top: "ctc" '
        f"ctc_decoder_param {{ blank_index: {blank} ctc_merge_repeated: {str(merge).lower()} }} }}"
    )


@pytest.mark.parametrize("blank", [0, 2, -1])
@pytest.mark.parametrize("merge", [True, False])
@pytest.mark.parametrize("ties", [True, False])
def test_ctc_greedy_decoder(layer_check, blank, merge, ties):
    def feeds(n):
        rng = np.random.default_rng(7)
        if ties:
            return {"data": rng.integers(0, 3, (12, 3, 5)).astype(F32)}
        logits = rng.normal(0, 2, (12, 3, 5))
        return {"data": (np.exp(logits) / np.exp(logits).sum(2, keepdims=True)).astype(F32)}

    layer_check(
        decoder_net(blank, merge),
        lambda i, w: {"ctc": greedy_loops(i["data"], blank, merge)},
        feeds=feeds,
        opencv=False,
        dynamic=False,
    )


def test_accuracy_form_is_refused(tmp_path):
    from caffe_compat.errors import CaffeCompatError
    from caffe_compat.ir.load import load_net

    path = tmp_path / "net.prototxt"
    path.write_text(
        'layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { '
        "dim: 4 dim: 2 dim: 3 } shape { dim: 2 dim: 4 } } }\n"
        'layer { name: "ctc" type: "CTCGreedyDecoder" bottom: "data" bottom: "label" top: "acc" }'
    )
    with pytest.raises(CaffeCompatError, match="accuracy while training"):
        load_net(path)
