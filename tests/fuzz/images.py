"""Photo headers fuzzed against the decoder: the size our header reader gives must be the size
OpenCV allocates, or larger.

Seeds are a small photo encoded by OpenCV in every format the reader accepts, plus hand-made
disguised files (tests/_hostile_images.py). Mutations: ImageWidth/ImageLength entries duplicated
before or after the real ones with other values, extra TIFF pages, header integers overwritten,
bytes flipped, PNM comments ended by a carriage return, long Radiance header lines, cuts.

The judge runs in a child process whose OpenCV was loaded with ``OPENCV_IO_MAX_IMAGE_PIXELS`` =
``LIMIT`` (OpenCV reads it once, at load): a case where our reader says at most ``LIMIT``
pixels but OpenCV refuses the file by that limit, or decodes more pixels than we said, is a
bypass. ``python tests/fuzz/images.py --cases N --seed S`` runs ``N`` cases and prints one JSON
line of counts and the bypasses found.
"""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
LIMIT = 4096  # pixels: the seeds are 53 x 37 = 1,961
FORMATS = (".png", ".jpg", ".bmp", ".tiff", ".ppm", ".pgm", ".pam", ".pfm", ".hdr", ".webp", ".sr")


@dataclass
class ImageCase:
    seed: str
    ops: list[str]
    data: bytes


def seed_images() -> list[tuple[str, bytes]]:
    """(name, bytes): OpenCV's encodings of one small photo, and disguised hand-made files."""
    import cv2
    import numpy as np

    sys.path.insert(0, str(HERE.parent))
    from _hostile_images import DISGUISED, tiff_second_page

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 255, (37, 53, 3), dtype=np.uint8)
    seeds = []
    for ext in FORMATS:
        image = photo.astype(np.float32) / 255 if ext in (".pfm", ".hdr") else photo
        image = image[:, :, 0] if ext == ".pgm" else image
        ok, data = cv2.imencode(ext, image)
        if ok:
            seeds.append((ext, data.tobytes()))
    for name, build in DISGUISED.items():
        seeds.append((name, build((40, 30), (16, 16))))
    seeds.append(("tiff-two-pages", tiff_second_page((16, 16), (40, 30))))
    return seeds


def _tiff_entries(data: bytes) -> tuple[str, int, int] | None:
    """(byte order, first IFD offset, entry count) of a classic TIFF."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 8 or struct.unpack_from(order + "H", data, 2)[0] != 42:
        return None
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    if ifd + 2 > len(data):
        return None
    return order, ifd, struct.unpack_from(order + "H", data, ifd)[0]


_HARMLESS_TAGS = (274, 282, 283, 284, 296, 305, 306, 339)  # orientation, resolution, ...


def _tiff_duplicate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An ImageWidth or ImageLength entry with another value in the first directory: written
    over a harmless entry (the layout stays intact) or inserted at a random place (offsets after
    it are not fixed up: damage the reader must take too)."""
    found = _tiff_entries(data)
    if found is None:
        return data, "not a classic TIFF"
    order, ifd, count = found
    tag = rng.choice((256, 257))
    kind = rng.choice((3, 4))
    value = rng.choice((1, 16, 100, 1000, 65535))
    packed = struct.pack(order + "HH", value, 0) if kind == 3 else struct.pack(order + "I", value)
    entry = struct.pack(order + "HHI", tag, kind, 1) + packed
    harmless = [
        i
        for i in range(count)
        if ifd + 2 + 12 * i + 2 <= len(data)
        and struct.unpack_from(order + "H", data, ifd + 2 + 12 * i)[0] in _HARMLESS_TAGS
    ]
    out = bytearray(data)
    if harmless and rng.random() < 0.6:
        where = rng.choice(harmless)
        at = ifd + 2 + 12 * where
        out[at : at + 12] = entry
        return bytes(out), f"TIFF tag {tag} type {kind} = {value} written over entry {where}"
    where = rng.randrange(count + 1)
    at = ifd + 2 + 12 * where
    out[at:at] = entry
    struct.pack_into(order + "H", out, ifd, count + 1)
    return bytes(out), f"TIFF tag {tag} type {kind} = {value} inserted at entry {where}"


def _int_field(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if len(data) < 8:
        return data, "too short"
    at = rng.randrange(min(len(data) - 4, 96))
    fmt = rng.choice(("<H", ">H", "<I", ">I"))
    value = rng.choice((0, 1, 100, 255, 4096, 65535)) if "H" in fmt else rng.choice((1, 100, 70000))
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out), f"{fmt} {value} at {at}"


def _flip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    spots = [rng.randrange(min(len(out), 256)) for _ in range(rng.randint(1, 4))]
    for spot in spots:
        out[spot] = rng.randrange(256)
    return bytes(out), f"bytes changed at {spots}"


def _text_header(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """PNM-family and Radiance headers: a comment ended by CR, or a 127-byte line."""
    if data[:1] == b"P":
        at = data.find(b"\n") + 1
        return data[:at] + b"# c\r100 100\n" + data[at:], "PNM comment ended by CR"
    if data[:2] == b"#?":
        at = data.find(b"\n") + 1
        line = b"X" * rng.choice((126, 127, 128)) + b"\n-Y 100 +X 100\n"
        return data[:at] + line + data[at:], "Radiance long header line"
    return data, "no text header"


_MUTATIONS = (
    (_tiff_duplicate, 30),
    (_int_field, 30),
    (_flip, 20),
    (_text_header, 10),
)


class ImageMutator:
    def __init__(self, seeds: list[tuple[str, bytes]], seed: int = 0) -> None:
        self.seeds, self.seed = seeds, seed

    def case(self, index: int) -> ImageCase:
        rng = random.Random(f"image:{self.seed}:{index}")
        name, data = rng.choice(self.seeds)
        ops = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            mutate = rng.choices([m for m, _ in _MUTATIONS], weights=[w for _, w in _MUTATIONS])[0]
            data, op = mutate(data, rng)
            ops.append(op)
        if rng.random() < 0.05:
            cut = rng.randrange(len(data) + 1)
            data, ops = data[:cut], [*ops, f"cut at {cut}"]
        return ImageCase(name, ops, data)


def judge(cases: list[ImageCase]) -> list[dict]:
    """Run in a process whose OpenCV was loaded under ``LIMIT``: the bypasses among ``cases``."""
    import cv2
    import numpy as np

    from caffe_compat.app.image_size import image_size
    from caffe_compat.app.images import sniff_image

    found = []
    for number, case in enumerate(cases):
        kind = sniff_image(case.data[:32])
        size = image_size(kind, case.data) if kind else None
        if size is None or size[0] * size[1] > LIMIT:
            continue  # refused by the header check, before OpenCV
        verdict = None
        try:
            image = cv2.imdecode(np.frombuffer(case.data, np.uint8), cv2.IMREAD_COLOR)
        except cv2.error as exc:
            if "CV_IO_MAX_IMAGE_PIXELS" in str(exc):
                verdict = "OpenCV saw more pixels than the header check"
        else:
            if image is not None and image.shape[0] * image.shape[1] > size[0] * size[1]:
                verdict = f"decoded {image.shape[1]} x {image.shape[0]}"
        if verdict:
            found.append(
                {"case": number, "seed": case.seed, "ops": case.ops, "size": size, "why": verdict}
            )
    return found


def run(cases: int, seed: int, start: int = 0) -> dict:
    """``cases`` mutated images judged in one child process; counts and bypasses."""
    code = (
        "import json, sys; sys.path[:0] = sys.argv[1:3]; "
        "from fuzz.images import ImageMutator, judge, seed_images; "
        "m = ImageMutator(seed_images(), int(sys.argv[3])); "
        "cases = [m.case(i) for i in range(int(sys.argv[4]), int(sys.argv[4]) + int(sys.argv[5]))]; "
        "print(json.dumps(judge(cases)))"
    )
    env = {**os.environ, "OPENCV_IO_MAX_IMAGE_PIXELS": str(LIMIT)}
    root = str(HERE.parents[1])
    argv = [str(HERE.parent), root, str(seed), str(start), str(cases)]
    child = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=3600
    )
    if child.returncode != 0:
        return {"cases": cases, "crash": child.returncode, "stderr": child.stderr[-2000:]}
    return {"cases": cases, "bypasses": json.loads(child.stdout.strip().splitlines()[-1])}


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    print(json.dumps(run(args.cases, args.seed, args.start)))
