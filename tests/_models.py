"""The synthesized Levi-Hassner age/gender models the application tests share (zoo prototxts,
seeded weights, ONNX exports), made once per test session."""

from __future__ import annotations

from caffe_compat.converters.onnx.export import save_onnx, to_onnx
from caffe_compat.io.writer import definitions_only, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.zoo import load_card

ZOO = {"age": "levi_hassner_age", "gender": "levi_hassner_gender"}


def synth_models(tmp_path_factory) -> dict[str, dict[str, str]]:
    """Synthesized age/gender weights (zoo prototxts), their caffemodels and ONNX exports; made
    once per test session (shared through the session's base temp folder)."""
    folder = tmp_path_factory.getbasetemp() / "levi_hassner_synth"
    files = {
        task: {
            "prototxt": str(load_card(name).prototxt_path()),
            "weights": str(folder / f"{task}.caffemodel"),
            "onnx": str(folder / f"{task}.onnx"),
        }
        for task, name in ZOO.items()
    }
    if not (folder / "done").exists():
        folder.mkdir(exist_ok=True)
        for seed, task in ((11, "age"), (12, "gender")):
            loaded = load_net(files[task]["prototxt"])
            blobs = synthesize(loaded, seed=seed)
            write_caffemodel(files[task]["weights"], definitions_only(loaded.net.layer), blobs)
            graph = load_net(files[task]["prototxt"], files[task]["weights"]).graph
            save_onnx(to_onnx(graph), files[task]["onnx"])
        (folder / "done").touch()
    return files
