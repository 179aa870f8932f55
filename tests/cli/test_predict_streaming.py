"""predict streams: with stream=True each photo's result is out before the next photo is read;
without, faces of several photos share net calls. Same numbers either way. The CLI streams
unless stdout is a regular file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

from caffe_compat.app.predictor import Predictor
from caffe_compat.cli.predict import _streaming

pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from _models import synth_models

    models = synth_models(tmp_path_factory)
    return Predictor(
        age_model=models["age"]["onnx"], gender_model=models["gender"]["onnx"], crop="center"
    )


def _run(predictor, stream: bool) -> tuple[list[tuple[str, int]], list[np.ndarray]]:
    """(key, photos read when its result came out) per result, and the age probabilities."""
    rng = np.random.default_rng(5)
    photos = [rng.integers(0, 255, (90, 80, 3), dtype=np.uint8) for _ in range(4)]
    read: list[int] = []

    def items():
        for i, photo in enumerate(photos):
            read.append(i)
            yield f"photo{i}", photo

    order, probs = [], []
    for key, faces in predictor.predict_many(items(), no_detect=True, stream=stream):
        order.append((key, len(read)))
        probs.append(np.array(faces[0].age_probs))
        assert faces[0].face == 1 and faces[0].path == key
    return order, probs


def test_stream_yields_each_photo_before_reading_the_next(predictor):
    order, streamed = _run(predictor, stream=True)
    assert order == [("photo0", 1), ("photo1", 2), ("photo2", 3), ("photo3", 4)]
    batched_order, batched = _run(predictor, stream=False)
    assert batched_order == [(f"photo{i}", 4) for i in range(4)]  # one net call for all four
    np.testing.assert_allclose(np.stack(streamed), np.stack(batched), rtol=0, atol=1e-6)


def test_the_cli_batches_only_into_regular_files(tmp_path):
    with open(tmp_path / "out.jsonl", "w") as regular:
        assert not _streaming(regular)
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "w") as pipe:
            assert _streaming(pipe)
    finally:
        os.close(read_end)
    assert _streaming(io.StringIO())  # no descriptor (captured output): stream
