"""Seeded mutations of a populated cache, for the fuzz tests: entries swapped between nets,
damaged, replaced by hostile records, re-signed with hostile manifests (as a holder of the key
could), turned into links, FIFOs or folders, huge sparse payloads, a damaged or exposed key,
unsafe folders and files of the former layout.

A case builds a cache holding the entries of two nets, A and B (the ONNX conversion of
``caffe_compat.dnn`` and the parsed weights of ``caffe_compat.cache.weights``), mutates it, then
asks for A. The outcome must be A's own result, bit for bit (from the cache or rebuilt), or a
``CaffeCompatError`` refusing an unsafe folder or key; B's result, a wrong one or any other
exception is a failure. ``CacheFuzz(folder).case(i)`` is the same case on every machine.

    python tests/fuzz/cache_mutator.py --cases 500 --seed 1
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
NET = ROOT / "tests" / "fuzz" / "seeds" / "small_cnn.prototxt"
MODEL = "tiny"
HOSTILE_RECORDS = [
    b"[" * 200_000,
    b"{" * 100_000,
    b"[1, 2]",
    b"{}",
    b'{"body": {}, "mac": ""}',
    b'{"body": {"x": 1e400}, "mac": "0"}',
    b'{"body": [], "mac": 7}',
    b"\xff\xfe\x00\x00",
    b"",
    b"null",
    b'"' + b"x" * 100_000 + b'"',
]
HOSTILE_VALUES = [
    10**10,
    2**63,
    2**64 + 1,
    -1,
    10**400,
    0,
    1.5,
    "x",
    None,
    [],
    {},
    [[[[]]]],
    True,
]


@dataclass
class Outcome:
    # "ok"; "refused" (an unsafe folder or key); "forged" (a manifest re-signed with the key
    # served: only a holder of the key can, see caffe_compat.cache); "wrong" (not A's result
    # without a forgery) or "internal" (any other exception): the last two are failures.
    kind: str = "ok"
    ops: list[str] = field(default_factory=list)
    detail: str = ""


def _net_files(folder: Path) -> dict[str, tuple[Path, Path]]:
    """Two nets, A and B: the seed prototxt with two synthesized weight sets."""
    from caffe_compat.io import write_caffemodel
    from caffe_compat.io.writer import definitions_only
    from caffe_compat.ir.load import load_net
    from caffe_compat.tools.synth import synthesize

    loaded = load_net(NET)
    nets = {}
    for name, seed in (("a", 0), ("b", 1)):
        sub = folder / name
        sub.mkdir(parents=True)
        prototxt = sub / "net.prototxt"
        shutil.copyfile(NET, prototxt)
        weights = sub / "net.caffemodel"
        blobs = synthesize(loaded, seed=seed, method="he")
        write_caffemodel(weights, definitions_only(loaded.net.layer), blobs)
        nets[name] = (prototxt, weights)
    return nets


class CacheFuzz:
    """Deterministic cache cases in ``folder`` (a scratch folder of the caller's)."""

    def __init__(self, folder: Path, seed: int = 0) -> None:
        from caffe_compat.dnn.model import convert
        from caffe_compat.io import read_weights
        from caffe_compat.io.identity import file_identity

        self.folder, self.seed = folder, seed
        self.nets = _net_files(folder / "nets")
        self._sha256 = {name: file_identity(w).sha256 for name, (_, w) in self.nets.items()}
        self.fresh_onnx = convert(*self.nets["a"]).onnx
        self.fresh_weights = read_weights(self.nets["a"][1])
        self.template = folder / "template"
        self._populate(self.template)

    def _populate(self, home: Path) -> None:
        """Both nets' entries of both kinds, as readNetFromCaffe and load_pretrained make them."""
        from caffe_compat.cache.weights import cached_weights
        from caffe_compat.dnn.cache import cached_conversion
        from caffe_compat.io.identity import file_identity

        old = os.environ.get("CAFFE_COMPAT_HOME")
        os.environ["CAFFE_COMPAT_HOME"] = str(home)
        try:
            for name in ("a", "b"):
                prototxt, weights = self.nets[name]
                cached_conversion(prototxt, weights)
                model = home / MODEL / weights.name
                model.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(weights, model.with_name(f"{name}.caffemodel"))
                where = model.with_name(f"{name}.caffemodel")
                cached_weights(home, MODEL, where, file_identity(where))
        finally:
            if old is None:
                os.environ.pop("CAFFE_COMPAT_HOME", None)
            else:
                os.environ["CAFFE_COMPAT_HOME"] = old

    # --- one case ----------------------------------------------------------------------------

    def case(self, index: int) -> Outcome:
        rng = random.Random(f"{self.seed}:{index}")
        home = self.folder / f"case{index}"
        shutil.copytree(self.template, home, symlinks=True)
        outcome = Outcome()
        target = rng.choice(("dnn", "weights"))
        outcome.ops.append(target)
        for _ in range(rng.choice((1, 1, 2))):
            try:
                outcome.ops.append(self._mutate(home, target, rng))
            except Exception as exc:  # the harness's own trouble (copying onto a folder...)
                outcome.ops.append(f"mutation not possible ({type(exc).__name__})")
        try:
            self._check(home, target, outcome)
        except Exception:
            outcome.kind, outcome.detail = "internal", traceback.format_exc()
        finally:
            _make_removable(home)
            shutil.rmtree(home, ignore_errors=True)
        return outcome

    def _files(self, home: Path, target: str, name: str) -> tuple[Path, Path]:
        """(payload, record) of net ``name``'s entry of ``target``."""
        if target == "dnn":
            folder, stem_of = home / "dnn", "net."
            records = sorted(folder.glob(f"{stem_of}*.json"))
            payloads = {p.with_suffix(".json"): p for p in folder.glob("*.onnx")}
        else:
            folder = home / MODEL / "converted"
            records = sorted(folder.glob(f"{name}.*.json"))
            payloads = {p.with_suffix(".json"): p for p in folder.glob("*.bin")}
        ids = self._sha256[name]
        for record in records:
            if not record.is_file() or record.is_symlink():  # a FIFO would block the read
                continue
            try:
                found = json.loads(record.read_text())["body"]["sources"]["weights"]["sha256"]
            except (ValueError, KeyError, TypeError, OSError, RecursionError):
                continue
            if found == ids:
                return payloads.get(record, record.with_suffix(".bin")), record
        return folder / "absent.bin", folder / "absent.json"

    def _mutate(self, home: Path, target: str, rng: random.Random) -> str:
        a_payload, a_record = self._files(home, target, "a")
        b_payload, b_record = self._files(home, target, "b")
        action = rng.choice(
            [
                "swap",
                "flip",
                "truncate",
                "hostile",
                "resign",
                "sparse",
                "special",
                "key",
                "folder",
                "former",
            ]
        )
        if action == "swap":
            which = rng.choice(("payload", "record", "both"))
            if which in ("payload", "both") and b_payload.is_file():
                _replace(a_payload, b_payload.read_bytes())
            if which in ("record", "both") and b_record.is_file():
                _replace(a_record, b_record.read_bytes())
            return f"swap {which} with B's"
        path = rng.choice((a_payload, a_record))
        small = path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 26
        if action in ("flip", "truncate") and small:
            data = bytearray(path.read_bytes())
            if action == "flip" and data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            else:
                data = data[: rng.randrange(len(data) + 1)]
            _replace(path, bytes(data))
            return f"{action} {path.suffix}"
        if action == "hostile":
            _replace(a_record, rng.choice(HOSTILE_RECORDS))
            return "hostile record"
        if action == "resign" and a_record.is_file() and not a_record.is_symlink():
            return self._resign(home, a_record, rng)
        if action == "sparse" and a_payload.is_file() and not a_payload.is_symlink():
            with open(a_payload, "r+b") as handle:
                handle.truncate(rng.choice((3 << 30, 1 << 40)))
            return "sparse huge payload"
        if action == "special":
            _remove(path)
            kind = rng.choice(("fifo", "link", "folder"))
            if kind == "fifo":
                os.mkfifo(path)
            elif kind == "link":
                path.symlink_to(b_payload if path.suffix != ".json" else b_record)
            else:
                path.mkdir()
            return f"{path.suffix} is a {kind}"
        if action == "key":
            key = home / ".cache-key"
            choice = rng.choice(("delete", "garbage", "open", "link"))
            if choice == "delete":
                key.unlink()
            elif choice == "garbage":
                key.write_bytes(rng.randbytes(rng.randrange(100)))
            elif choice == "open":
                key.chmod(0o644)
            else:
                (home / "key-copy").write_bytes(key.read_bytes())
                key.unlink()
                key.symlink_to(home / "key-copy")
            return f"key {choice}"
        if action == "folder":
            folder = a_record.parent
            if rng.random() < 0.5:
                folder.chmod(0o777)
                return "folder world-writable"
            moved = folder.with_name(folder.name + "-real")
            folder.rename(moved)
            folder.symlink_to(moved)
            return "folder is a link"
        if action == "former" and target == "weights":
            folder = home / MODEL / "converted"
            from caffe_compat.io.identity import file_identity

            blob = file_identity(home / MODEL / "a.caffemodel").git_blob
            np.savez(folder / f"a.{blob}.npz", manifest=np.array(json.dumps([1, 2])))
            return "former-layout npz planted"
        return f"{action}: nothing to do"

    def _resign(self, home: Path, record: Path, rng: random.Random) -> str:
        """A hostile manifest, signed with the cache's key."""
        from caffe_compat.cache.entries import _sign
        from caffe_compat.cache.home import cache_key

        try:
            doc = json.loads(record.read_text())
            body = doc["body"]
        except (ValueError, KeyError, TypeError, RecursionError):
            return "resign: no record"
        spots = list(_containers(body["meta"]))
        if not spots:
            return "resign: nothing to change"
        owner, key = rng.choice(spots)
        value = rng.choice(HOSTILE_VALUES)
        if isinstance(value, float) and not np.isfinite(value):
            value = 1.5
        owner[key] = value
        try:
            doc["mac"] = _sign(cache_key(home, create=False), body)
        except (ValueError, OverflowError, TypeError):
            return "resign: not signable"
        record.write_text(json.dumps(doc))
        return f"resign meta[..][{key}] = {str(value)[:20]}"

    def _check(self, home: Path, target: str, outcome: Outcome) -> None:
        from caffe_compat.errors import CaffeCompatError

        try:
            if target == "dnn":
                from caffe_compat.dnn.cache import cached_conversion

                old = os.environ.get("CAFFE_COMPAT_HOME")
                os.environ["CAFFE_COMPAT_HOME"] = str(home)
                try:
                    converted, _ = cached_conversion(*self.nets["a"])
                finally:
                    if old is None:
                        os.environ.pop("CAFFE_COMPAT_HOME", None)
                    else:
                        os.environ["CAFFE_COMPAT_HOME"] = old
                same = converted.onnx == self.fresh_onnx
            else:
                from caffe_compat.cache.weights import cached_weights
                from caffe_compat.io.identity import file_identity

                path = home / MODEL / "a.caffemodel"
                got = cached_weights(home, MODEL, path, file_identity(path)).weights
                same = _same_weights(got, self.fresh_weights)
        except CaffeCompatError as exc:
            if type(exc).__name__ != "UnsafeCacheError":
                raise
            outcome.kind, outcome.detail = "refused", str(exc)
            return
        if not same:
            forged = any(op.startswith("resign meta") for op in outcome.ops)
            outcome.kind = "forged" if forged else "wrong"
            outcome.detail = "served something else than A's result"


def _containers(data, depth: int = 0):
    """(container, key) of every value inside ``data`` (lists and dicts), to replace one."""
    if depth > 6:
        return
    if isinstance(data, dict):
        for key, value in data.items():
            yield data, key
            yield from _containers(value, depth + 1)
    elif isinstance(data, list):
        for key, value in enumerate(data[:8]):
            yield data, key
            yield from _containers(value, depth + 1)


def _same_weights(got, want) -> bool:
    if list(got.blobs) != list(want.blobs):
        return False
    return all(
        len(got.blobs[n]) == len(want.blobs[n])
        and all(
            a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got.blobs[n], want.blobs[n])
        )
        for n in want.blobs
    )


def _remove(path: Path) -> None:
    """Whatever is at ``path`` (file, link, FIFO, folder) gone, never opened."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()


def _replace(path: Path, data: bytes) -> None:
    """``data`` as a new regular file at ``path`` (writing into a FIFO would block)."""
    _remove(path)
    path.write_bytes(data)


def _make_removable(home: Path) -> None:
    for path in [home, *home.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    import logging

    logging.getLogger("caffe_compat").setLevel(logging.ERROR)  # one warning per rebuilt entry
    counts: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="cache-fuzz-") as scratch:
        fuzz = CacheFuzz(Path(scratch), args.seed)
        for index in range(args.cases):
            outcome = fuzz.case(index)
            counts[outcome.kind] = counts.get(outcome.kind, 0) + 1
            if outcome.kind in ("wrong", "internal"):
                print(f"case {index} ({'; '.join(outcome.ops)}): {outcome.detail[-2000:]}")
    print(f"{args.cases} cases, seed {args.seed}: {counts}")
    return 1 if counts.get("wrong") or counts.get("internal") else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main())
