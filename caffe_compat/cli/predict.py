"""Age and gender of every face in photos: detect the faces, run the Levi-Hassner nets, print one
line per face (or JSON lines), optionally write annotated copies. Folders are searched
recursively; files count as photos by their content, not their names. A file that is not a
decodable image is reported on stderr and skipped. Models: the zoo's released weights (they must
be in the cache, or --download), or your own files with --age-model / --gender-model (put the
photos before these options). Exit code 2 when a model cannot be loaded or a named path does not
exist. With --engine ray, one SOURCE (a folder or a manifest of paths) goes through a Ray Data
pipeline into resumable Parquet shards in --output DIR.

Faces are numbered from 1 within each photo, in the text and in JSON. Results are printed as each
photo finishes when the output is a terminal or a pipe; redirected to a file, faces of several
photos share net calls (--batch faces per call, faster on CPU and more so on GPU) and come out in
groups; --stream / --no-stream choose either way.

--json prints one object per line, all with the same keys; "kind" says which record it is:
  face     a face: "path", "face" (1, 2, ... in the photo), "box" and "crop_box" ([x, y, w, h]),
           "detection_score", "age", "age_prob", "age_top2", "age_probs", "gender",
           "gender_prob", "gender_probs", "crop", "backend"
  no_face  a photo without a face: "path", "crop", "backend"; the face fields are null
  skipped  an input that is not a readable photo: "path", "error"; the rest null
Fields of a model that was not run (--models) are null. The summary goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from ..app.faces import DEFAULT_MARGIN, SSD_CONFIDENCE
from ..errors import CaffeCompatError
from ..printable import printable
from ..progress import Progress
from ._models import add_model_arguments

NAME = "predict"
HELP = "age and gender of the faces in photos (Levi-Hassner nets)"
ORDER = 70
CROP_MODES = ("oversample", "center", "opencv")
PHOTOS_HELP = (
    "photos or folders, before or after the options (a model option keeps the one or two files "
    "its net needs; what follows is a photo)"
)


# --------------------------------------------------------------------------------------------
# predict


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("photos", nargs="*", metavar="PHOTO_OR_FOLDER", help=PHOTOS_HELP)
    parser.add_argument(
        "--models", default="age,gender", help="which nets to run: age, gender or age,gender"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="JSON lines: one object per face, photo without a face, or skipped file (same keys; "
        '"kind" tells them apart; faces numbered from 1)',
    )
    parser.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        help="print each photo's result as soon as it is done (default: yes when stdout is a "
        "terminal or a pipe, no when it is a file, where batching faces of several photos per "
        "net call is faster)",
    )
    parser.add_argument(
        "--annotate", metavar="OUT_DIR", help="write copies of the photos with boxes and labels"
    )
    parser.add_argument(
        "--force", action="store_true", help="let --annotate overwrite files already in OUT_DIR"
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
        metavar="DETECTOR",
        help="face detector: haar (OpenCV 4's Haar cascade), ssd (the zoo's res10 SSD face "
        "detector, fetched with --download), or an SSD of the res10 kind as MODEL.onnx or "
        "PROTOTXT CAFFEMODEL (default: haar where OpenCV has it, else ssd)",
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
        elif os.path.lexists(path):  # a file, or a FIFO, device, dangling link: skipped later
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


def refuse_existing(targets: dict[Path, Path]) -> None:
    """--annotate without --force never replaces a file."""
    existing = [str(t) for t in targets.values() if os.path.lexists(t)]
    if existing:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise CaffeCompatError(
            f"--annotate would overwrite {existing[0]}{more} (pass --force, or choose another "
            "folder)"
        )


def write_annotated(
    source: Path, target: Path, faces: list[Any], *, overwrite: bool = True
) -> Path:
    """Re-read the photo, draw, encode in its own format when OpenCV can (else PNG), atomically;
    ``overwrite=False`` refuses to replace an existing file."""
    import cv2

    from ..app.images import read_image
    from ..io.atomic import atomic_output

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
    with atomic_output(target, overwrite=overwrite) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return target


RECORD_KEYS = (
    "kind",
    "path",
    "face",
    "box",
    "crop_box",
    "detection_score",
    "age",
    "age_prob",
    "age_top2",
    "age_probs",
    "gender",
    "gender_prob",
    "gender_probs",
    "crop",
    "backend",
    "error",
)


def record(kind: str, path: str, face: Any = None, **fields: Any) -> dict[str, Any]:
    """One JSON line: every key of RECORD_KEYS, null where it does not apply (module doc)."""
    out: dict[str, Any] = dict.fromkeys(RECORD_KEYS)
    if face is not None:
        out.update({k: v for k, v in face.to_dict().items() if k in out})
    out.update(fields, kind=kind, path=path)
    return out


def face_line(face: Any) -> str:
    x, y, w, h = face.box
    text = f"{printable(face.path)}: face {face.face} at x={x} y={y} w={w} h={h}:"
    parts = []
    if face.age is not None:
        top2 = ", ".join(f"{label} {p:.1%}" for label, p in face.age_top2)
        parts.append(f"age {face.age} {face.age_prob:.1%} (top-2: {top2})")
    if face.gender is not None:
        parts.append(f"gender {face.gender} {face.gender_prob:.1%}")
    return f"{text} {', '.join(parts)}"


def _streaming(out: TextIO) -> bool:
    """Results per photo unless stdout is a regular file (then batching across photos pays)."""
    try:
        return not stat.S_ISREG(os.fstat(out.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):  # no file descriptor (captured, in memory)
        return True


# Options taking a net: one file (MODEL.onnx, or a detector's name) or PROTOTXT WEIGHTS.
MODEL_OPTIONS = {"age_model": "--age-model", "gender_model": "--gender-model"}
DETECTOR_NAMES = ("haar", "ssd")


def _files_of_net(values: list[str], names: tuple[str, ...] = ()) -> int:
    """How many of an option's values name its net: 1 for MODEL.onnx (or a detector name),
    else 2 (PROTOTXT WEIGHTS)."""
    first = values[0]
    return 1 if first.lower().endswith(".onnx") or first in names else min(2, len(values))


def take_photos(args: argparse.Namespace) -> None:
    """Photos written after a model option (``--age-model P W photo.jpg``) go to the photos;
    with no photo at all, one error saying what each option took."""
    taken: list[str] = []
    moved: list[str] = []
    options = [(dest, flag, ()) for dest, flag in MODEL_OPTIONS.items()]
    options.append(("detector", "--detector", DETECTOR_NAMES))
    for dest, flag, names in options:
        values = getattr(args, dest, None)
        if not values:
            continue
        keep = _files_of_net(values, names)
        setattr(args, dest, values[:keep])
        moved += values[keep:]
        taken.append(f"{flag} took {' '.join(values[:keep])}")
    args.photos = [*moved, *args.photos]
    if not args.photos:
        detail = f" ({'; '.join(taken)} as its net)" if taken else ""
        raise CaffeCompatError(f"no photo or folder given{detail}: name at least one")


def run(args: argparse.Namespace) -> int:
    take_photos(args)
    return _predict(args)


def _predict(args: argparse.Namespace) -> int:
    from ..app.images import read_image
    from ..app.predictor import Predictor
    from ._models import predict_settings
    from ._scale import reject_scale_options, run_scaled

    if args.engine == "ray":
        return run_scaled(args)
    reject_scale_options(args)

    settings = predict_settings(args)
    files, missing, _ = collect(args.photos)
    targets = annotation_targets(files, Path(args.annotate)) if args.annotate else {}
    if not args.force:
        refuse_existing(targets)
    predictor = Predictor(settings)
    err = sys.stderr
    out = sys.stdout
    report_missing(missing, args.json)
    bar = Progress(len(files), label="predict", unit="photos", enabled=len(files) > 1)
    counts = {"photos": 0, "faces": 0, "skipped": len(missing), "no_face": 0}
    setup = {"crop": predictor.crop, "backend": predictor.backend}

    def photos() -> Iterator[tuple[str, Any]]:
        for path, _ in files:
            try:
                image = read_image(path, **settings.photo_limits())
            except CaffeCompatError as exc:
                bar.clear()
                print(f"caffe-compat: skipped {exc}", file=err)
                if args.json:
                    print(json.dumps(record("skipped", str(path), error=exc.reason)), file=out)
                counts["skipped"] += 1
            else:
                yield str(path), image
            bar.update()

    stream = _streaming(out) if args.stream is None else args.stream
    results = predictor.predict_many(photos(), stream=stream)
    for key, faces in results:
        bar.clear()
        counts["photos"] += 1
        counts["faces"] += len(faces)
        if not faces:
            counts["no_face"] += 1
            if args.json:
                print(json.dumps(record("no_face", key, **setup)), file=out)
            else:
                print(f"{printable(key)}: no face found", file=out)
        for face in faces:
            line = json.dumps(record("face", key, face)) if args.json else face_line(face)
            print(line, file=out)
        if args.annotate:
            source = Path(key)
            write_annotated(source, targets[source], faces, overwrite=args.force)
        out.flush()
        bar.refresh()
    bar.close()
    print_summary(args, predictor, counts)
    return 2 if missing else 0


def report_missing(missing: list[str], as_json: bool) -> None:
    """The arguments that name nothing, on stderr (and as ``skipped`` records under --json)."""
    for argument in missing:
        shown = printable(argument)
        print(f"caffe-compat: skipped {shown}: no such file or folder", file=sys.stderr)
        if as_json:
            print(json.dumps(record("skipped", argument, error="no such file or folder")))


def print_summary(args: argparse.Namespace, predictor: Any, counts: dict[str, int]) -> None:
    """The counts, the settings in force, and the precision check's agreement (stderr under
    --json, where stdout holds only records)."""
    summary = (
        f"{counts['photos']} photo(s), {counts['faces']} face(s), {counts['no_face']} without "
        f"a face, {counts['skipped']} skipped; crop {predictor.crop}, backend {predictor.backend}"
    )
    modes = sorted({c.precision for c in predictor.classifiers.values()})
    summary += f"; precision {', '.join(modes)}"
    if args.annotate:
        summary += f"; annotated copies in {printable(args.annotate)}"
    print(summary, file=sys.stderr if args.json else sys.stdout)
    for task, (agree, total) in predictor.precision_agreement.items():
        print(
            f"precision check {task}: {agree}/{total} faces give the same {task} as exact mode",
            file=sys.stderr if args.json else sys.stdout,
        )
