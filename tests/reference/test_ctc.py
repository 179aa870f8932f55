"""CTCGreedyDecoder in the float64 reference, decoded by hand from caffe_ocr's loop."""

from __future__ import annotations

import numpy as np
import pytest

# best classes per step: 1, 1, 0, 1, 2; step 2 ties classes 0 and 1 at 0.5: the first, 0, wins
SCORES = np.array(
    [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.5, 0.5, 0.0], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7]]
).reshape(5, 1, 3)


def decoder(blank: int, merge: bool) -> str:
    return (
        'layer { name: "d" type: "CTCGreedyDecoder" bottom: "data" top: "d" ctc_decoder_param { '
        f"blank_index: {blank} ctc_merge_repeated: {str(merge).lower()} }} }}"
    )


@pytest.mark.parametrize(
    "blank, merge, expected",
    [
        (0, True, [1, 1, 2, -1, -1]),  # the repeat at step 1 merged, the blank at step 2 dropped
        (0, False, [1, 1, 1, 2, -1]),
        (2, True, [1, 0, 1, -1, -1]),  # 2 is the blank: step 4 dropped, step 2's 0 kept
        (-1, True, [1, 0, 1, -1, -1]),  # negative: the last class (2)
    ],
)
def test_greedy_decoding_by_hand(run_layers, blank, merge, expected):
    out = run_layers(decoder(blank, merge), data=SCORES)["d"]
    assert out.shape == (1, 5, 1, 1)
    np.testing.assert_array_equal(out.ravel(), expected)
