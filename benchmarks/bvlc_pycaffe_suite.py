"""Run BVLC Caffe's own Python test suite against caffe-compat's pycaffe drop-in.

    python benchmarks/bvlc_pycaffe_suite.py FOLDER [-k PATTERN] [-v]

FOLDER holds BVLC's ``python/caffe/test/test_*.py`` (for instance ``git show`` each of them out
of a clone of github.com/BVLC/caffe; they are not part of this repository). Every test module is
loaded with ``import caffe`` resolved to ``caffe_compat.pycaffe`` (``install()``), inside a
scratch working folder (the solver tests write snapshots into the current folder), and run with
``unittest``. A tiny stand-in for ``six`` is provided when the real package is absent (the tests
only use ``itervalues``/``iteritems``/``next``).

It prints one line per test (ok, FAIL, ERROR, skip), then the count passed and the tests BVLC's
suite has that need Python layers or NCCL, which caffe-compat leaves to other work; exit code 1
when anything else fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import types
import unittest
from pathlib import Path

# Tests that need what this drop-in does not offer here: Python layers, multi-GPU NCCL.
OUT_OF_SCOPE = ("test_python_layer", "test_python_layer_with_param_str", "test_nccl")


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
    return 1 if unexpected else 0


def _flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from _flatten(item)
        else:
            yield item


if __name__ == "__main__":
    sys.exit(main())
