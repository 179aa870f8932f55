"""Run an exported ONNX model in OpenCV 5 (``readNetFromONNX``), which cannot live in the same
environment as the OpenCV 4 Caffe reference: the script runs in another Python given by path."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..errors import CaffeCompatError

ENV_VAR = "CAFFE_COMPAT_OPENCV5_PYTHON"

_SCRIPT = r"""
import json, sys
import cv2, numpy as np
spec = json.load(open(sys.argv[1]))
net = cv2.dnn.readNetFromONNX(spec["model"])
for name, path in spec["inputs"].items():
    net.setInput(np.load(path), name)
outs = net.forward(spec["outputs"])
for name, out in zip(spec["outputs"], outs):
    np.save(spec["results"][name], np.asarray(out))
print(cv2.__version__)
"""


def opencv5_python() -> str | None:
    """Path of a Python that has OpenCV 5 (from the environment variable), if configured."""
    path = os.environ.get(ENV_VAR)
    return path if path and Path(path).exists() else None


def run_opencv5_onnx(
    python: str,
    model: str | os.PathLike[str],
    feeds: Mapping[str, np.ndarray],
    outputs: Sequence[str],
) -> tuple[str, dict[str, np.ndarray]]:
    """OpenCV's version string and the named outputs of ``model`` for ``feeds``."""
    with tempfile.TemporaryDirectory(prefix="caffe-compat-cv5-") as tmp:
        folder = Path(tmp)
        spec = {"model": str(model), "inputs": {}, "outputs": list(outputs), "results": {}}
        for i, (name, array) in enumerate(feeds.items()):
            path = folder / f"in{i}.npy"
            np.save(path, np.ascontiguousarray(array, dtype=np.float32))
            spec["inputs"][name] = str(path)
        for i, name in enumerate(outputs):
            spec["results"][name] = str(folder / f"out{i}.npy")
        (folder / "spec.json").write_text(json.dumps(spec))
        (folder / "run.py").write_text(_SCRIPT)
        done = subprocess.run(
            [python, str(folder / "run.py"), str(folder / "spec.json")],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise CaffeCompatError(f"OpenCV 5 could not run the model: {tail}", path=str(model))
        results = {name: np.load(path) for name, path in spec["results"].items()}
        return done.stdout.strip(), results
