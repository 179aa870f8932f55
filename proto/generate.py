"""Regenerate caffe_pb2.py / caffe_pb2.pyi from caffe.proto with the protoc bundled in grpcio-tools.

Run from anywhere: ``python proto/generate.py``. ``--check`` regenerates into a temporary folder and
exits 1 when the committed bindings differ, so CI can prove they match the schema.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUTPUTS = ("caffe_pb2.py", "caffe_pb2.pyi")


def generate(out_dir: Path) -> None:
    """Run protoc on caffe.proto, writing the Python module and its type stub into out_dir."""
    from grpc_tools import protoc  # test-only dependency: users never regenerate

    args = ["protoc", f"-I{HERE}", f"--python_out={out_dir}", f"--pyi_out={out_dir}", "caffe.proto"]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed on caffe.proto")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if not parser.parse_args().check:
        generate(HERE)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        stale = [n for n in OUTPUTS if not filecmp.cmp(Path(tmp) / n, HERE / n, shallow=False)]
    if stale:
        print(f"stale generated bindings: {', '.join(stale)}; run python proto/generate.py")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
