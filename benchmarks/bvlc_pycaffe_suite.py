"""Run BVLC Caffe's own Python test suite against caffe-compat's pycaffe drop-in.

    python benchmarks/bvlc_pycaffe_suite.py FOLDER [-k PATTERN] [-v] [--classify SCRIPT]

FOLDER holds BVLC's ``python/caffe/test/test_*.py`` (for instance ``git show`` each of them out
of a clone of github.com/BVLC/caffe; they are not part of this repository). Every test module is
loaded with ``import caffe`` resolved to ``caffe_compat.pycaffe`` (``install()``), inside a
scratch working folder (the solver tests write snapshots into the current folder), and run with
``unittest``. A tiny stand-in for ``six`` is provided when the real package is absent (the tests
only use ``itervalues``/``iteritems``/``next``).

It prints one line per test (ok, FAIL, ERROR, skip), then the count passed and the tests BVLC's
suite has that need multi-GPU NCCL, which caffe-compat leaves to other work; exit code 1 when
anything else fails.

``--classify SCRIPT`` also runs BVLC's ``python/classify.py`` (the file, unchanged) as
``__main__`` on a small net made here (Input 3x10x10, Convolution, InnerProduct, Softmax; filler
weights saved with ``net.save``), a mean ``.npy`` and one PNG, and checks the predictions it
saves: one row of 4 probabilities summing to 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
import unittest
from pathlib import Path

# Tests that need what this drop-in does not offer here: multi-GPU NCCL.
OUT_OF_SCOPE = ("test_nccl",)


def _six_stand_in() -> types.ModuleType:
    module = types.ModuleType("six")
    module.itervalues = lambda d: iter(d.values())  # type: ignore[attr-defined]
    module.iteritems = lambda d: iter(d.items())  # type: ignore[attr-defined]
    module.iterkeys = lambda d: iter(d.keys())  # type: ignore[attr-defined]
    module.next = next  # type: ignore[attr-defined]
    module.string_types = (str,)  # type: ignore[attr-defined]
    module.PY3 = True  # type: ignore[attr-defined]
    return module


class _Result(unittest.TextTestResult):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.passed: list[str] = []

    def addSuccess(self, test) -> None:
        super().addSuccess(test)
        self.passed.append(test.id())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1].strip())
    parser.add_argument("folder", type=Path, help="folder with BVLC's test_*.py files")
    parser.add_argument("-k", dest="pattern", default=None, help="only test ids containing this")
    parser.add_argument("-v", dest="verbose", action="store_true", help="tracebacks in full")
    parser.add_argument("--classify", type=Path, default=None, help="BVLC's python/classify.py")
    args = parser.parse_args(argv)
    folder = args.folder.resolve()
    files = sorted(folder.glob("test_*.py"))
    if not files:
        print(f"{folder}: no test_*.py files", file=sys.stderr)
        return 2

    import caffe_compat.pycaffe as shim

    shim.install()
    try:
        import six  # noqa: F401
    except ImportError:
        sys.modules["six"] = _six_stand_in()
    sys.path.insert(0, str(folder))
    tests: list[unittest.TestCase] = []
    loader = unittest.TestLoader()
    broken: list[str] = []
    for path in files:
        try:
            module = __import__(path.stem)
        except Exception as exc:  # a module that cannot import: its tests cannot run
            broken.append(f"IMPORT {path.stem}: {type(exc).__name__}: {exc}")
            continue
        for test in _flatten(loader.loadTestsFromModule(module)):
            if args.pattern is None or args.pattern in test.id():
                tests.append(test)
    ids = [test.id() for test in tests]
    suite = unittest.TestSuite(tests)

    here = os.getcwd()
    with tempfile.TemporaryDirectory() as scratch:
        os.chdir(scratch)
        try:
            with open(os.devnull, "w") as devnull:
                stream = sys.stderr if args.verbose else devnull
                runner = unittest.TextTestRunner(stream=stream, resultclass=_Result, verbosity=0)
                result = runner.run(suite)
        finally:
            os.chdir(here)
    problems = {t.id(): ("FAIL", tb) for t, tb in result.failures}
    problems.update({t.id(): ("ERROR", tb) for t, tb in result.errors})
    skipped = {t.id(): reason for t, reason in result.skipped}
    total = result.testsRun
    unexpected = 0
    for line in broken:
        scope = line.split()[1].rstrip(":") in OUT_OF_SCOPE
        unexpected += not scope
        print(f"ERROR {line}{' (out of scope)' if scope else ''}")
    for name in ids:
        if name in problems:
            kind, trace = problems[name]
            scope = name.split(".")[0] in OUT_OF_SCOPE
            unexpected += not scope
            last = trace.strip().splitlines()[-1]
            print(f"{kind:5} {name}{' (out of scope)' if scope else ''}: {last}")
            if args.verbose:
                print(trace)
        elif name in skipped:
            print(f"skip  {name}: {skipped[name]}")
        else:
            print(f"ok    {name}")
    print(f"\n{len(result.passed)} of {total} passed; {unexpected} failure(s) in scope")
    if args.classify is not None:
        unexpected += not _run_classify(args.classify.resolve())
    return 1 if unexpected else 0


CLASSIFY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2
    weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def _run_classify(script: Path) -> bool:
    """BVLC's classify.py on a tiny net, unchanged, with ``import caffe`` resolved here."""
    import runpy

    import numpy as np
    from PIL import Image

    import caffe_compat.pycaffe as caffe

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "deploy.prototxt").write_text(CLASSIFY_NET)
        caffe.set_random_seed(1)
        caffe.Net(str(folder / "deploy.prototxt"), caffe.TEST).save(str(folder / "w.caffemodel"))
        rng = np.random.default_rng(0)
        np.save(folder / "mean.npy", rng.uniform(90, 130, (3, 12, 12)).astype(np.float32))
        pixels = rng.integers(0, 256, (16, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "photo.png")
        argv = [
            str(script),
            str(folder / "photo.png"),
            str(folder / "out.npy"),
            "--model_def",
            str(folder / "deploy.prototxt"),
            "--pretrained_model",
            str(folder / "w.caffemodel"),
            "--mean_file",
            str(folder / "mean.npy"),
            "--images_dim",
            "12,12",
        ]
        saved = sys.argv
        sys.argv = argv
        try:
            runpy.run_path(str(script), run_name="__main__")
        except BaseException as exc:  # the script's own failure, reported as one line
            print(f"FAIL  classify.py: {type(exc).__name__}: {exc}")
            return False
        finally:
            sys.argv = saved
        out = np.load(folder / "out.npy")
    good = out.shape == (1, 4) and abs(float(out.sum()) - 1.0) < 1e-5
    print(
        f"{'ok   ' if good else 'FAIL '} classify.py: predictions {out.shape}, sum {out.sum():.6f}"
    )
    return good


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


if __name__ == "__main__":
    sys.exit(main())
