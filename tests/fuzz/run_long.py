"""The long fuzz run: seeded mutations of the project's prototxts for a few minutes, in a child
process capped at 4 GB of address space (RLIMIT_AS), through the library and (``--cli``) the
commands in-process (inspect, synth, convert with its parity check). Prints cases/s and the count
of internal errors, which must be zero; each failing case is saved for replay.

    python tests/fuzz/run_long.py --minutes 5 --seed 1 [--cli] [--out fuzz-failures]
                                  [--images 20000]

``--images N`` also runs N mutated photo headers against OpenCV (fuzz/images.py) and counts each
bypass as an internal error.

A child that dies (a crash, the kernel's OOM killer) counts its current case as an internal
error and is restarted at the next case.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for fuzz.*


def _size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def worker(args: argparse.Namespace) -> None:
    """The child: cap the address space, then run cases from ``--start``, one JSON line each."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (_size(args.address_space), resource.RLIM_INFINITY))
    import tempfile

    from fuzz.harness import run_api, run_cli
    from fuzz.mutator import Mutator, seed_nets

    seeds = seed_nets()
    mutator = Mutator(seeds, args.seed)
    weights = _weights(seeds, args.small_weight)
    folder = Path(tempfile.mkdtemp(prefix="fuzz-"))
    path = folder / "case.prototxt"
    index = args.start
    while True:
        case = mutator.case(index, weights)
        print(json.dumps({"start": index}), flush=True)
        path.write_text(case.text)
        outcome = run_api(path)
        steps, late = list(outcome.steps), outcome.late
        if args.cli and outcome.kind != "internal":
            by_cli = run_cli(path, folder, convert=True)
            steps += by_cli.steps
            if by_cli.kind == "internal" or (by_cli.late and not late):
                outcome = by_cli
            late = late or by_cli.late
        record = {
            "done": index,
            "kind": outcome.kind,
            "steps": steps,
            "detail": outcome.detail[-4000:],
            "late": late,
            "seed": case.seed,
            "ops": case.ops,
        }
        print(json.dumps(record), flush=True)
        index += 1


def _shape(detail: str) -> str:
    """An error line without its names and numbers, so alike errors count together."""
    import re

    text = detail.split('"), ', 1)[-1]
    return re.sub(r'"[^"]*"|\d[\d.,e+-]*', "#", text)[-120:]


def _weights(seeds: list[tuple[str, str]], small: float) -> list[float]:
    """The small seed nets (tests/fuzz/seeds) ``small`` times as likely as each large one."""
    return [small if name.startswith("tests/fuzz/seeds/") else 1.0 for name, _ in seeds]


def _save(out: Path, index: int, text: str, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"case_{index}.prototxt").write_text(text)
    (out / f"case_{index}.txt").write_text(json.dumps(record, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--address-space", default="4G", help="RLIMIT_AS of the child")
    parser.add_argument("--cli", action="store_true", help="also run inspect, synth, convert")
    parser.add_argument("--out", default="fuzz-failures", help="folder for failing cases")
    parser.add_argument(
        "--small-weight", type=float, default=4.0, help="weight of each small seed net (large: 1)"
    )
    parser.add_argument("--images", type=int, default=0, help="photo header cases to run too")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from fuzz.mutator import Mutator, seed_nets

    seeds = seed_nets()
    mutator = Mutator(seeds, args.seed)
    weights = _weights(seeds, args.small_weight)
    deadline = time.monotonic() + 60 * args.minutes
    start_time = time.monotonic()
    kinds: collections.Counter[str] = collections.Counter()
    steps: collections.Counter[str] = collections.Counter()
    late: collections.Counter[str] = collections.Counter()
    next_index, crashes = args.start, 0
    while time.monotonic() < deadline:
        command = [sys.executable, __file__, "--worker", "--seed", str(args.seed)]
        command += ["--start", str(next_index), "--address-space", args.address_space]
        command += ["--small-weight", str(args.small_weight)]
        command += ["--cli"] if args.cli else []
        child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        started = None
        assert child.stdout is not None
        try:
            for line in child.stdout:
                if time.monotonic() >= deadline:
                    break
                record = json.loads(line)
                if "start" in record:
                    started = record["start"]
                    continue
                started = None
                next_index = record["done"] + 1
                kinds[record["kind"]] += 1
                steps.update(record["steps"])  # the library's last step, each command:exit
                if record.get("late"):
                    late[record["detail"].split(": ", 1)[0] + ": " + _shape(record["detail"])] += 1
                if record["kind"] == "internal":
                    _save(
                        Path(args.out),
                        record["done"],
                        mutator.case(record["done"], weights).text,
                        record,
                    )
                    print(f"internal error in case {record['done']}: {record['detail'][:300]}")
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGTERM)
            code = child.wait()
        if started is not None and time.monotonic() < deadline:  # the child died mid-case
            crashes += 1
            kinds["internal"] += 1
            record = {"done": started, "kind": "crash", "exit": code}
            _save(Path(args.out), started, mutator.case(started, weights).text, record)
            print(f"child died in case {started} (exit {code})")
            next_index = started + 1
    elapsed = time.monotonic() - start_time
    total = sum(kinds.values())
    print(
        f"{total} cases in {elapsed:.0f} s: {total / elapsed:.2f} cases/s; "
        f"ok {kinds['ok']}, refused {kinds['refused']}, internal errors {kinds['internal']} "
        f"(crashes {crashes}); address space {args.address_space}, seed {args.seed}, "
        f"cases {args.start}..{next_index - 1}{', with the CLI' if args.cli else ''}"
    )
    print("library: last step reached; commands: exit codes:", dict(steps.most_common()))
    print(f"refused after loading ({sum(late.values())}), for review:")
    for text, count in late.most_common(15):
        print(f"  {count:4d}  {text}")
    if args.images:
        from fuzz.images import run as run_images

        started = time.monotonic()
        found = run_images(args.images, args.seed)
        bypasses = found.get("bypasses", [])
        print(
            f"{args.images} photo header cases in {time.monotonic() - started:.0f} s: "
            f"{len(bypasses)} bypass(es){', child crashed' if 'crash' in found else ''}"
        )
        for bypass in bypasses[:10]:
            print(f"  {bypass}")
        if bypasses or "crash" in found:
            return 1
    return 1 if kinds["internal"] else 0


if __name__ == "__main__":
    sys.exit(main())
