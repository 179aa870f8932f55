"""Age and gender of every face in photos: detect the faces, run the Levi-Hassner nets, print one
line per face (or JSON lines), optionally write annotated copies. Folders are searched
recursively; files count as photos by their content, not their names. A file that is not a
decodable image is reported on stderr and skipped. Models: the zoo's released weights (they must
be in the cache, or --download), or your own files with --age-model / --gender-model (put the
photos before these options). Exit code 2 when a model cannot be loaded or a named path does not
exist. With --engine ray, one SOURCE (a folder or a manifest of paths) goes through a Ray Data
pipeline into resumable Parquet shards in --output DIR."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..errors import CaffeCompatError
from ..faces import DEFAULT_MARGIN, SSD_CONFIDENCE

NAME = "predict"
HELP = "age and gender of the faces in photos (Levi-Hassner nets)"
ORDER = 70
CROP_MODES = ("oversample", "center", "opencv")


# --------------------------------------------------------------------------------------------
# Shared with `evaluate`


def add_model_arguments(parser: argparse.ArgumentParser, tasks: tuple[str, ...]) -> None:
    """--backend, --<task>-model, --mean, --batch, --cache-dir, --download, --device."""
    parser.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        help="run the nets with PyTorch (CaffeNet) or ONNX Runtime (default: onnx when a model "
        "is an .onnx file, else torch)",
    )
    for task in tasks:
        parser.add_argument(
            f"--{task}-model",
            nargs="+",
            metavar="FILE",
            help=f"{task} net: PROTOTXT WEIGHTS (converted in memory) or MODEL.onnx (default: "
            f"the zoo's released weights)",
        )
        parser.add_argument(
            f"--{task}-labels",
            metavar="A,B,...",
            help=f"comma-separated names of the {task} net's outputs (default: the zoo card's)",
        )
    parser.add_argument(
        "--mean",
        metavar="zoo|MEAN.binaryproto",
        help="mean to subtract: default the card's per-channel B, G, R values; 'zoo' for the "
        "released mean image (downloaded like the weights), or a .binaryproto file",
    )
    parser.add_argument(
        "--batch", type=int, default=16, help="faces per net call (default: %(default)s)"
    )
    parser.add_argument("--cache-dir", help="model cache folder (default: $CAFFE_COMPAT_HOME)")
    parser.add_argument(
        "--download", action="store_true", help="download the zoo weights when not in the cache"
    )
    parser.add_argument("--device", help="torch device (default: cpu)")


def predictor_options(args: argparse.Namespace, tasks: tuple[str, ...]) -> dict[str, Any]:
    """``Predictor`` keyword arguments from the shared arguments."""
    options: dict[str, Any] = {
        "backend": args.backend,
        "batch": args.batch,
        "cache_dir": args.cache_dir,
        "download": args.download,
        "device": args.device or "cpu",
        "mean": args.mean,
    }
    for task in tasks:
        spec = getattr(args, f"{task}_model")
        if spec is not None and len(spec) not in (1, 2):
            raise CaffeCompatError(
                f"--{task}-model takes PROTOTXT WEIGHTS or MODEL.onnx, got {len(spec)} paths "
                "(put the photos before the model options)"
            )
        options[f"{task}_model"] = tuple(spec) if spec else None
        labels = getattr(args, f"{task}_labels")
        if labels:
            options[f"{task}_labels"] = tuple(x.strip() for x in labels.split(","))
    return options


class Progress:
    """A one-line text bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, total: int, unit: str, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total, self.unit = total, unit
        self.enabled = total > 0 and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done, self.last, self.shown = 0, 0.0, False

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.enabled and (now - self.last >= 0.1 or done >= self.total):
            self.last = now
            self._draw()

    def _draw(self) -> None:
        filled = int(30 * self.done / max(self.total, 1))
        bar = "#" * filled + "-" * (30 - filled)
        self.stream.write(f"\r[{bar}] {self.done}/{self.total} {self.unit}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        """Erase the bar so a message can use the line (the next update redraws it)."""
        if self.shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self.shown = False

    def close(self) -> None:
        self.clear()


# --------------------------------------------------------------------------------------------
# predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="+", metavar="PHOTO_OR_FOLDER", help="photos or folders")
    parser.add_argument(
        "--models", default="age,gender", help="which nets to run: age, gender or age,gender"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines: one object per face")
    parser.add_argument(
        "--annotate", metavar="OUT_DIR", help="write copies of the photos with boxes and labels"
    )
    parser.add_argument(
        "--crop",
        choices=CROP_MODES,
        help="preprocessing: oversample (10 crops averaged, the paper's; default), center, or "
        "opencv (blobFromImage)",
    )
    parser.add_argument(
        "--no-detect", action="store_true", help="no face detection: each photo is one face"
    )
    parser.add_argument(
        "--detector",
        nargs="+",
        metavar="FILE",
        help="SSD face detector (res10 300x300 kind): MODEL.onnx or PROTOTXT CAFFEMODEL "
        "(default: OpenCV's Haar frontal-face cascade)",
    )
    parser.add_argument(
        "--confidence",
        type=float,
        default=SSD_CONFIDENCE,
        help="SSD detector score threshold (default: %(default)s)",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        help="context around each face box, as a fraction of its size per side "
        "(default: %(default)s)",
    )
    add_model_arguments(parser, ("age", "gender"))
    from ._scale import add_scale_arguments

    add_scale_arguments(parser)


def _walk(folder: Path) -> Iterator[Path]:
    """Files under ``folder``, sorted, hidden entries (dot names) left out."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


def collect(paths: list[str]) -> tuple[list[tuple[Path, Path]], list[str], bool]:
    """(file, its name relative to the output folder) for every candidate file; the arguments
    that do not exist; whether any argument was a folder."""
    found: list[tuple[Path, Path]] = []
    missing: list[str] = []
    any_folder = False
    for argument in paths:
        path = Path(argument)
        if path.is_dir():
            any_folder = True
            base = Path(path.resolve().name or "photos")
            found += [(f, base / f.relative_to(path)) for f in _walk(path)]
        elif path.is_file():
            found.append((path, Path(path.name)))
        else:
            missing.append(argument)
    return found, missing, any_folder


def annotation_targets(files: list[tuple[Path, Path]], out_dir: Path) -> dict[Path, Path]:
    """Where each annotated copy goes: OUT_DIR/<relative name>, made unique, never a source."""
    targets: dict[Path, Path] = {}
    used: set[Path] = set()
    sources = {f.resolve() for f, _ in files}
    for source, relative in files:
        target = out_dir / relative
        stem, suffix, n = target.stem, target.suffix, 1
        while target.resolve() in used:
            n += 1
            target = target.with_name(f"{stem}-{n}{suffix}")
        if target.resolve() in sources:
            raise CaffeCompatError(
                "--annotate would overwrite this photo; choose a folder outside the inputs",
                path=str(target),
            )
        used.add(target.resolve())
        targets[source] = target
    return targets


def _label(face: Any) -> str:
    parts = []
    if face.gender is not None:
        parts.append(f"{face.gender} {face.gender_prob:.0%}")
    if face.age is not None:
        parts.append(f"{face.age} {face.age_prob:.0%}")
    return ", ".join(parts)


def draw(image: Any, faces: list[Any]) -> Any:
    """A copy of ``image`` with each face's box and labels."""
    import cv2

    canvas = image.copy()
    side = min(canvas.shape[:2])
    thick = max(1, round(side / 300))
    scale = max(0.4, side / 900)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), (0, 200, 0), thick)
        text = _label(face)
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        top = y - th - base - 4 if y - th - base - 4 >= 0 else min(y + h, canvas.shape[0] - 1)
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + base + 4), (0, 200, 0), -1)
        cv2.putText(canvas, text, (x + 2, top + th + 2), font, scale, (0, 0, 0), thick, cv2.LINE_AA)
    return canvas


def write_annotated(source: Path, target: Path, faces: list[Any]) -> Path:
    """Re-read the photo, draw, encode in its own format when OpenCV can (else PNG), atomically."""
    import cv2

    from ..io.atomic import atomic_output
    from ..predict import read_image

    canvas = draw(read_image(source), faces)
    suffix = target.suffix.lower()
    ok, encoded = (False, None)
    if suffix:
        try:
            ok, encoded = cv2.imencode(suffix, canvas)
        except cv2.error:
            ok = False
    if not ok:
        target = target.with_name(target.name + ".png")
        ok, encoded = cv2.imencode(".png", canvas)
    with atomic_output(target) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return target


def face_line(face: Any) -> str:
    x, y, w, h = face.box
    text = f"{face.path}: face {face.face + 1} at x={x} y={y} w={w} h={h}:"
    parts = []
    if face.age is not None:
        top2 = ", ".join(f"{label} {p:.1%}" for label, p in face.age_top2)
        parts.append(f"age {face.age} {face.age_prob:.1%} (top-2: {top2})")
    if face.gender is not None:
        parts.append(f"gender {face.gender} {face.gender_prob:.1%}")
    return f"{text} {', '.join(parts)}"


def run(args: argparse.Namespace) -> int:
    from ..predict import Predictor, parse_models, read_image
    from ._scale import reject_scale_options, run_scaled

    if args.engine == "ray":
        return run_scaled(args)
    reject_scale_options(args)

    tasks = parse_models(args.models)
    files, missing, any_folder = collect(args.photos)
    targets = annotation_targets(files, Path(args.annotate)) if args.annotate else {}
    options = predictor_options(args, ("age", "gender"))
    for task in ("age", "gender"):
        if task not in tasks:
            options.pop(f"{task}_model", None)
            options.pop(f"{task}_labels", None)
    predictor = Predictor(
        models=tasks,
        crop=args.crop,
        detector=tuple(args.detector) if args.detector else None,
        confidence=args.confidence,
        margin=args.margin,
        progress=not args.json,
        **options,
    )
    err = sys.stderr
    for argument in missing:
        print(f"caffe-compat: skipped {argument}: no such file or folder", file=err)
    bar = Progress(len(files), "photos") if any_folder else Progress(0, "photos")
    counts = {"photos": 0, "faces": 0, "skipped": len(missing), "no_face": 0}

    def photos() -> Iterator[tuple[str, Any]]:
        for done, (path, _) in enumerate(files, start=1):
            try:
                image = read_image(path)
            except CaffeCompatError as exc:
                bar.clear()
                print(f"caffe-compat: skipped {exc}", file=err)
                counts["skipped"] += 1
            else:
                yield str(path), image
            bar.update(done)

    for key, faces in predictor.predict_many(photos(), no_detect=args.no_detect):
        bar.clear()
        counts["photos"] += 1
        counts["faces"] += len(faces)
        if not faces:
            counts["no_face"] += 1
            if args.json:
                print(json.dumps({"path": key, "faces": 0, "message": "no face found"}))
            else:
                print(f"{key}: no face found")
        for face in faces:
            print(json.dumps(face.to_dict()) if args.json else face_line(face))
        if args.annotate:
            source = Path(key)
            write_annotated(source, targets[source], faces)
        sys.stdout.flush()
        bar.update(bar.done)
    bar.close()
    summary = (
        f"{counts['photos']} photo(s), {counts['faces']} face(s), {counts['no_face']} without "
        f"a face, {counts['skipped']} skipped; crop {predictor.crop}, backend {predictor.backend}"
    )
    if args.annotate:
        summary += f"; annotated copies in {args.annotate}"
    print(summary, file=err if args.json else sys.stdout)
    return 2 if missing else 0
