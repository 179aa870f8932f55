"""The main job on a fresh machine with no files of yours: take the zoo's own Levi-Hassner age and
gender definitions, SYNTHESIZE weights in the official shapes (calibrated so predictions vary;
these are not the released weights), convert both nets to ONNX and PyTorch, and verify every
blob against the float64 reference (caffe_compat.reference) and, where installed, OpenCV 4's own
Caffe reader on the same files. Then shows the real-weights commands.
The files (about 270 MB) go to a temporary folder removed at the end, unless --out keeps them."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

from ..io import write_caffemodel
from ..io.writer import definitions_only
from ..ir.load import load_net
from ..tools.convert import convert
from ..tools.synth import synthesize
from ..verify import verify_loaded

NAME = "demo"
HELP = "convert and verify the zoo's Levi-Hassner nets with synthesized weights"
ORDER = 5
MODELS = ("levi_hassner_age", "levi_hassner_gender")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="keep the demo's files (weights, ONNX, PyTorch; about 270 MB) in DIR (default: a "
        "temporary folder, removed at the end)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthesized weights")
    parser.add_argument("--batch", type=int, default=20, help="verification inputs (default 20)")


def _run_one(name: str, out: Path, seed: int, batch: int) -> bool:
    prototxt = Path(str(files("caffe_compat.zoo") / f"{name}.prototxt"))
    loaded = load_net(prototxt)
    blobs = synthesize(loaded, seed=seed)
    weights = out / f"{name}.SYNTHETIC.caffemodel"
    write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
    print(f"\n== {name}: zoo prototxt + SYNTHESIZED weights ({weights})")
    result = convert(prototxt, weights, out_prefix=out / name, force=True, check=False)
    for kind, path in result.outputs.items():
        print(f"   wrote {kind:<5} {path}")
    print(f"   convert took {sum(result.timings.values()):.2f} s")
    # The float64 reference judges everywhere; OpenCV 4 joins where it is installed.
    report = verify_loaded(
        load_net(prototxt, weights),
        weights_path=str(weights),
        batch=batch,
        require_reference=False,
    )
    for reference, status in report.references.items():
        print(f"   reference {reference}: {status}")
    if "torch-cpu" in report.references:
        print("   no independent judge could run: this is an export check only")
    for (backend, value), row in sorted(report.worst().items()):
        if value in report.distinct_classes or value == "fc8":
            print(
                f"   {backend:<16} {row.blob:<5} max abs error {row.max_abs:.2e} "
                f"(limit {row.limit:.1e}) vs {row.reference}"
            )
    for agreement in report.argmax:
        print(
            f"   argmax {agreement.backend} vs {agreement.reference}: "
            f"{agreement.agree}/{agreement.total} inputs agree"
        )
    for output, count in report.distinct_classes.items():
        print(f"   {output}: {count} different predicted classes over {report.batch} inputs")
    print(f"   {'PASS' if report.passed else 'FAIL'}: {len(report.comparisons)} blob comparisons")
    return report.passed


@contextlib.contextmanager
def _folder(out: str | None) -> Iterator[Path]:
    """``out`` (created, kept) or a temporary folder removed on exit, whatever happens."""
    if out is not None:
        path = Path(out)
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="caffe-compat-demo-") as tmp:
        yield Path(tmp)


def run(args: argparse.Namespace) -> int:
    print("caffe-compat demo: no files of yours needed. The weights below are SYNTHESIZED in the")
    print("official Levi-Hassner shapes; every number checks conversion, not age/gender accuracy.")
    with _folder(args.out) as out:
        passed = all([_run_one(name, out, args.seed, args.batch) for name in MODELS])
    if args.out is None:
        print("\n(the files above were in a temporary folder, now removed; --out DIR keeps them)")
    print("\nWith the released weights (see README for where to get them):")
    print("   caffe-compat convert deploy_age.prototxt age_net.caffemodel")
    print("   caffe-compat verify  deploy_age.prototxt age_net.caffemodel")
    print(
        "   python -c \"import caffe_compat; caffe_compat.load_pretrained('levi_hassner_age', "
        'download=True)"'
    )
    return 0 if passed else 1
