"""One fuzz case through the library and the CLI: only CaffeCompatError may come out.

``run_api`` loads the definition (strict, and lenient as ``inspect`` does), synthesises small
weights, builds the ONNX model and runs onnx's full check (as ``convert`` does), and builds and
runs the PyTorch model on one item. ``run_cli`` calls ``caffe_compat.cli.main.main`` in-process:
``inspect``, ``synth`` and (``convert=True``) ``convert`` on the synthesised weights. Every step
works under a small memory budget, so a large net is refused (exit 2), never allocated.

An outcome is ``ok`` (every step ran), ``refused`` (a CaffeCompatError: the file's fault) or
``internal`` (anything else: a bug, with the traceback for the report). A command whose output
holds a raw control, bidi or separator character (a name shown unescaped) is ``internal`` too.
"""

from __future__ import annotations

import contextlib
import io
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.names import leaks

from caffe_compat.errors import CaffeCompatError

BUDGET = "256M"  # every fuzz step's memory budget


@dataclass
class Outcome:
    kind: str = "ok"  # "ok", "refused" or "internal"
    steps: list[str] = field(default_factory=list)  # what ran, in order
    detail: str = ""  # the error line, or the traceback of an internal error
    error: str = ""  # the exception's class name
    # Refused after loading and synthesis, for another reason than the memory budget or an
    # unsupported layer: a net Caffe's rules accept that a later step cannot handle (a converter
    # gap, or a check validation lacks). Not a failure; the long run lists them for review.
    late: bool = False

    def fail(self, step: str, exc: BaseException) -> Outcome:
        self.error = type(exc).__name__
        if isinstance(exc, CaffeCompatError):
            self.kind, self.detail = "refused", f"{step}: {exc}"
            expected = ("MemoryBudgetError", "UnsupportedLayersError")
            self.late = step in ("to_onnx", "torch") and self.error not in expected
        else:
            self.kind = "internal"
            self.detail = f"{step}: " + "".join(traceback.format_exception(exc)).strip()
        return self


def run_api(path: Path, *, forward: bool = True) -> Outcome:
    """The library calls a user makes, each under ``BUDGET``."""
    import torch

    from caffe_compat.budget import footprint, plan_batch, resolve
    from caffe_compat.converters.onnx.export import check_model, to_onnx
    from caffe_compat.converters.torch.model import CaffeNet
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize
    from caffe_compat.verify.inputs import feed_batch, feeds_for, index_inputs

    outcome = Outcome()
    step = "load (lenient)"
    try:
        load_net(path, strict=False)
        step = "load"
        loaded = load_net(path)
        step = "synth"
        synthesize(loaded, method="he", max_memory=BUDGET)
        step = "to_onnx"
        check_model(to_onnx(loaded.graph))
        if forward:
            step = "torch"
            graph = loaded.graph
            need = footprint(graph, loaded.inference.params)
            budget = resolve(BUDGET)
            wanted, fixed_batch = feed_batch(graph, 1)
            batch = plan_batch(
                budget,
                need,
                wanted,
                fixed=2 * need.params,
                copies=1,
                what="forward",
                shrink=fixed_batch is None,
            )
            feeds = feeds_for(graph.inputs, batch, ids=index_inputs(graph))
            with torch.no_grad():
                CaffeNet(graph)(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    except Exception as exc:
        return outcome.fail(step, exc)
    finally:
        outcome.steps.append(step)
    return outcome


def cli(*args: object) -> tuple[int, str]:
    """``main(args)`` in-process: its exit code and everything it printed."""
    from caffe_compat.cli.main import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main([str(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
    return code, out.getvalue()


def run_cli(path: Path, folder: Path, *, convert: bool = False) -> Outcome:
    """``inspect``, ``synth`` and optionally ``convert``; exit 3 (internal error) is a bug."""
    outcome = Outcome()
    weights = folder / "fuzz.caffemodel"
    commands = [
        ("inspect", ["inspect", path]),
        (
            "synth",
            ["synth", path, "-o", weights, "--method", "he", "--force", "--max-memory", BUDGET],
        ),
    ]
    if convert:
        prefix = folder / "fuzz_model"
        args = ["convert", path, weights, "-o", prefix, "--force", "--max-memory", BUDGET]
        commands.append(("convert", args))
    for step, args in commands:
        if step == "convert" and not weights.exists():
            break
        code, printed = cli(*args)
        outcome.steps.append(f"{step}:{code}")
        if code == 3 or code not in (0, 1, 2):
            outcome.kind, outcome.detail = "internal", f"{step} exit {code}: {printed.strip()}"
            return outcome
        leak = leaks(printed)  # names from the file must be shown escaped
        if leak:
            outcome.kind, outcome.detail = "internal", f"{step} printed a {leak}: {printed!r}"
            outcome.error = "unescaped output"
            return outcome
        if code == 2 and outcome.kind == "ok":
            outcome.kind, outcome.detail = "refused", f"{step}: {printed.strip()[-300:]}"
            expected = ("memory budget", "unsupported layer")
            outcome.late = step == "convert" and not any(e in printed for e in expected)
    if weights.exists():
        weights.unlink()
    return outcome
