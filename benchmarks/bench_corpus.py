"""Published net definitions end to end: inspect -> synth -> convert -> verify, one net at a time.

    python benchmarks/bench_corpus.py CORPUS [--jobs 2] [--batch 2] [--only NAMES] [--json out.json]

CORPUS is a folder of deploy/test prototxts (``*.prototxt`` in it or in its ``nets/``
subfolder). Each step of each net runs as its own ``python -m caffe_compat`` subprocess with a
wall-clock limit (``--timeout``, default 120 s) and an address-space cap (``--memory``, default
4G, set with RLIMIT_AS before the child starts), as a user on a small machine would run it
(with ``--allow-unknown-fields`` and ``--typical-input-shape``: a published net without an input
shape runs at its family's usual size, which every step's output names):

    inspect NET
    synth NET -o W.caffemodel
    convert NET W.caffemodel -o PREFIX
    verify NET W.caffemodel [--batch N]

A net's outcome is the first step that did not succeed, classified as

- ``ok``            every step exited 0 (verify: every blob within tolerance)
- ``unknown type``  a layer type the registry does not know (exit 2)
- ``error``         any other one-line refusal (exit 2): the message is shown
- ``mismatch``      convert's parity check or verify found a blob out of tolerance (exit 1)
- ``timeout``       the step ran past ``--timeout``
- ``internal``      anything else: exit 3 (an internal error), a signal, another code

The table lists every net with its outcome, the step and the first line of stderr; the summary
counts outcomes. ``--json`` writes the rows for comparing two runs (``--only`` takes a file of
net names, one a line, or a comma-separated list, to rerun some of them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

STEPS = ("inspect", "synth", "convert", "verify")
_UNKNOWN_TYPE = re.compile(
    r"unsupported layer type|no shape rule for type|unknown layer type", re.I
)
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGT]?)$", re.I)


@dataclass
class Row:
    net: str
    outcome: str
    step: str
    seconds: float
    message: str
    steps: dict[str, float] = field(default_factory=dict)  # seconds per step run


def parse_size(text: str) -> int:
    """Bytes from ``4G``, ``512M`` or a plain byte count."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    scale = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[match.group(2).upper()]
    return int(float(match.group(1)) * scale)


def _limit_memory(limit: int):
    """A preexec hook: the child (and whatever it starts) gets ``limit`` bytes of address space."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [""])[-1][:300]


def classify(step: str, code: int, stdout: str, stderr: str) -> tuple[str, str]:
    """(outcome, message) of one step's exit."""
    if code == 0:
        if step == "inspect" and _UNKNOWN_TYPE.search(stdout):
            return "unknown type", _first_line(
                "\n".join(line for line in stdout.splitlines() if _UNKNOWN_TYPE.search(line))
            )
        return "ok", ""
    if code < 0:
        return "internal", f"signal {-code}: {_first_line(stderr)}"
    if code == 2:
        text = stderr + stdout
        if _UNKNOWN_TYPE.search(text):
            return "unknown type", _first_line(
                "\n".join(line for line in text.splitlines() if _UNKNOWN_TYPE.search(line))
            )
        if "internal error" in stderr:
            return "internal", _first_line(stderr)
        return "error", _first_line(stderr or stdout)
    if code == 1 and step in ("convert", "verify"):  # convert's parity check, verify's table
        failed = [line for line in stdout.splitlines() if line.rstrip().endswith("FAIL")]
        return "mismatch", (failed[0] if failed else _first_line(stderr or stdout))[:300]
    return "internal", f"exit {code}: {_first_line(stderr)}"


def run_net(
    prototxt: Path,
    work: Path,
    *,
    timeout: float,
    memory: int,
    batch: int | None,
    extra: list[str],
    steps: tuple[str, ...] = STEPS,
) -> Row:
    """Every step of one net until the first that does not succeed."""
    weights = work / f"{prototxt.stem}.caffemodel"
    commands = {
        "inspect": ["inspect", str(prototxt)],
        "synth": ["synth", str(prototxt), "-o", str(weights), "--force"],
        "convert": ["convert", str(prototxt), str(weights), "-o", str(work / prototxt.stem)],
        "verify": ["verify", str(prototxt), str(weights)]
        + (["--batch", str(batch)] if batch else []),
    }
    commands["convert"].append("--force")
    started = time.perf_counter()
    times: dict[str, float] = {}
    for step in steps:
        begun = time.perf_counter()
        argv = [sys.executable, "-m", "caffe_compat", "-q", *commands[step], *extra]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                preexec_fn=_limit_memory(memory),
                cwd=work,
            )
        except subprocess.TimeoutExpired:
            times[step] = time.perf_counter() - begun
            return Row(prototxt.stem, "timeout", step, time.perf_counter() - started, "", times)
        times[step] = time.perf_counter() - begun
        outcome, message = classify(step, done.returncode, done.stdout, done.stderr)
        if outcome != "ok":
            elapsed = time.perf_counter() - started
            return Row(prototxt.stem, outcome, step, elapsed, message, times)
    for leftover in work.glob(f"{prototxt.stem}*"):
        leftover.unlink(missing_ok=True)  # the outputs of big nets fill a small disk
    return Row(prototxt.stem, "ok", steps[-1], time.perf_counter() - started, "", times)


def corpus_files(folder: Path, only: str | None) -> list[Path]:
    nets = folder / "nets" if (folder / "nets").is_dir() else folder
    files = sorted(nets.glob("*.prototxt"))
    if only:
        listed = "," not in only and Path(only).is_file()
        names = Path(only).read_text().split() if listed else only.split(",")
        wanted = {name.removesuffix(".prototxt") for name in names if name}
        files = [f for f in files if f.stem in wanted]
    return files


def render(rows: list[Row]) -> str:
    width = max((len(r.net) for r in rows), default=3)
    lines = [f"{'net':<{width}}  {'outcome':<12}  {'step':<7}  {'s':>6}  message"]
    for r in sorted(rows, key=lambda r: r.net):
        lines.append(
            f"{r.net:<{width}}  {r.outcome:<12}  {r.step:<7}  {r.seconds:6.1f}  {r.message}"
        )
    counts = Counter(r.outcome for r in rows)
    total = len(rows) or 1
    lines.append("")
    for outcome in ("ok", "unknown type", "error", "mismatch", "timeout", "internal"):
        lines.append(f"{outcome:<12} {counts[outcome]:4d}  ({100 * counts[outcome] / total:.0f} %)")
    lines.append(f"{'nets':<12} {len(rows):4d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", type=Path, help="folder of prototxts (or with nets/ inside)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per step")
    parser.add_argument("--memory", type=parse_size, default=parse_size("4G"), help="RLIMIT_AS")
    parser.add_argument("--jobs", type=int, default=1, help="nets run at once")
    parser.add_argument("--batch", type=int, default=None, help="verify's --batch")
    parser.add_argument("--only", help="net names: a file (one a line) or a comma list")
    parser.add_argument("--json", type=Path, help="write the rows here")
    parser.add_argument(
        "--strict-fields",
        action="store_true",
        help="leave out --allow-unknown-fields (then fork fields refuse the net)",
    )
    parser.add_argument(
        "--declared-shapes",
        action="store_true",
        help="leave out --typical-input-shape (then a net without an input shape, or with a "
        "1x1 placeholder, is refused)",
    )
    parser.add_argument("--workdir", type=Path, help="where weights and outputs go")
    parser.add_argument(
        "--last-step",
        choices=STEPS,
        default="verify",
        help="stop after this step (inspect: a quick survey of what loads)",
    )
    args = parser.parse_args(argv)
    files = corpus_files(args.corpus, args.only)
    if not files:
        parser.error(f"no .prototxt files in {args.corpus}")
    extra = [] if args.strict_fields else ["--allow-unknown-fields"]
    if not args.declared_shapes:
        extra.append("--typical-input-shape")
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        root = Path(scratch).resolve()
        files = [f.resolve() for f in files]

        def one(path: Path) -> Row:
            work = root / path.stem
            work.mkdir()
            row = run_net(
                path,
                work,
                timeout=args.timeout,
                memory=args.memory,
                batch=args.batch,
                extra=extra,
                steps=STEPS[: STEPS.index(args.last_step) + 1],
            )
            print(f"{row.outcome:<12} {row.step:<7} {row.seconds:6.1f}s {row.net}", flush=True)
            for leftover in work.iterdir():
                leftover.unlink()
            return row

        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            rows = list(pool.map(one, files))
    print(render(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
