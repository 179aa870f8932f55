"""Record real Caffe's Data layer (LMDB of raw Datums) in the TEST phase: centred crop, mean
file or mean values, scale, labels, wrapping around the end (run with a pycaffe build that has
LMDB; NOT run by the tests). The Datums go in ``data_layer.npz`` (the test rebuilds the LMDB),
the batches Caffe produced beside them.

    PYTHONPATH=<caffe>/python python record_data.py OUT_DIR
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import lmdb
import numpy as np

CASES = {
    # name: (transform_param text, float datums?)
    "mean_file": ('crop_size: 5 scale: 0.5 mean_file: "{mean}"', False),
    "mean_values": ("crop_size: 4 mean_value: 10 mean_value: 20 mean_value: 30", False),
    "float_datums": ("scale: 2 mean_value: 1.5", True),
}
NET = """layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{source}" backend: LMDB batch_size: 3 }}
  transform_param {{ {transform} }} }}
"""


def main() -> None:
    import caffe
    from caffe.proto import caffe_pb2

    out = Path(sys.argv[1])
    rng = np.random.default_rng(5)
    items = rng.integers(0, 256, (5, 3, 8, 10)).astype(np.uint8)
    floats = rng.normal(0, 3, (5, 3, 8, 10)).astype(np.float32)
    labels = np.arange(5) * 3 + 1
    mean = rng.uniform(0, 255, (1, 3, 8, 10)).astype(np.float32)
    arrays = {"items": items, "floats": floats, "labels": labels, "mean": mean[0]}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        blob = caffe.io.array_to_blobproto(mean)
        (work / "mean.binaryproto").write_bytes(blob.SerializeToString())
        for name, (transform, use_floats) in CASES.items():
            db = work / f"{name}_lmdb"
            env = lmdb.open(str(db), map_size=1 << 24)
            with env.begin(write=True) as txn:
                for index in range(5):
                    datum = caffe_pb2.Datum(
                        channels=3, height=8, width=10, label=int(labels[index])
                    )
                    if use_floats:
                        datum.float_data.extend(floats[index].reshape(-1).tolist())
                    else:
                        datum.data = items[index].tobytes()
                    txn.put(f"{index:08d}".encode(), datum.SerializeToString())
            env.close()
            text = NET.format(source=db, transform=transform.format(mean=work / "mean.binaryproto"))
            (work / "net.prototxt").write_text(text)
            net = caffe.Net(str(work / "net.prototxt"), caffe.TEST)
            for batch in range(3):  # 9 records from 5: wraps to the start twice
                net.forward()
                arrays[f"{name}_data{batch}"] = net.blobs["data"].data.copy()
                arrays[f"{name}_label{batch}"] = net.blobs["label"].data.copy()
            (out / f"data_layer.{name}.prototxt").write_text(
                NET.format(source="DB", transform=transform.format(mean="MEAN"))
            )
    np.savez_compressed(out / "data_layer.npz", **arrays)


if __name__ == "__main__":
    main()
