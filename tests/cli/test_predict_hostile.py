"""caffe-compat predict on folders holding hostile entries: each is skipped with its reason, the
run never blocks and exits 0; annotated copies never replace files without --force."""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
import pytest

from caffe_compat.cli.main import main

cv2 = pytest.importorskip("cv2")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from _models import synth_models

    return synth_models(tmp_path_factory)


def onnx_models(models) -> list[str]:
    return ["--age-model", models["age"]["onnx"], "--gender-model", models["gender"]["onnx"]]


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(4096)))


def run_main(argv: list[str], limit: float = 120.0) -> int:
    """main() in a thread, so a run that blocks fails the test instead of hanging it."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(argv)), daemon=True)
    thread.start()
    thread.join(limit)
    assert not thread.is_alive(), "predict blocked"
    return result[0]


@pytest.fixture
def hostile(tmp_path, astronaut):
    root = tmp_path / "photos"
    root.mkdir()
    cv2.imwrite(str(root / "a_face.jpg"), astronaut)
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.jpg")
    with open(root / "huge.jpg", "wb") as handle:  # 6 GiB with JPEG magic, sparse
        handle.write(b"\xff\xd8\xff\xe0")
        handle.truncate(6 << 30)
    (root / "bomb.png").write_bytes(png_claiming(30000, 30000))
    (root / "loop.jpg").symlink_to(root / "loop.jpg")
    (root / "sub").mkdir()
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)  # a folder loop
    return root


def test_hostile_entries_are_skipped_with_reasons(hostile, models, capsys):
    code = run_main(["predict", str(hostile), *onnx_models(models)])
    out, err = capsys.readouterr()
    assert code == 0
    assert f"{hostile / 'a_face.jpg'}: face 1 at" in out
    if hasattr(os, "mkfifo"):
        assert f"skipped {hostile / 'fifo.jpg'}: not a photo: a FIFO" in err
    assert f"skipped {hostile / 'huge.jpg'}: file is {6 << 30:,} bytes, over the" in err
    assert f"skipped {hostile / 'bomb.png'}: PNG image of 30000 x 30000" in err
    assert f"skipped {hostile / 'loop.jpg'}: not a photo: a symlink loop" in err
    skipped = 4 if hasattr(os, "mkfifo") else 3
    assert (
        out.strip()
        .splitlines()[-1]
        .startswith(f"1 photo(s), 1 face(s), 0 without a face, {skipped} skipped")
    )


def test_hostile_paths_named_directly_are_skipped_too(hostile, models, capsys):
    names = ["bomb.png", "loop.jpg"] + (["fifo.jpg"] if hasattr(os, "mkfifo") else [])
    code = run_main(["predict", *(str(hostile / n) for n in names), *onnx_models(models)])
    err = capsys.readouterr().err
    assert code == 0
    assert err.count("caffe-compat: skipped") == len(names) and "no such file" not in err


def test_control_characters_in_file_names_are_shown_escaped(tmp_path, astronaut, models, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    name = "x\x1b[2J\x1b[1;1Hall good\x07.jpg"
    cv2.imwrite(str(folder / "plain.jpg"), astronaut)
    os.rename(folder / "plain.jpg", folder / name)
    (folder / "junk\x1b[31m.txt").write_text("not a photo")
    assert run_main(["predict", str(folder), *onnx_models(models)]) == 0
    out, err = capsys.readouterr()
    assert "\x1b" not in out and "\x07" not in out and "\x1b" not in err
    assert "x\\x1b[2J\\x1b[1;1Hall good\\x07.jpg: face 1 at" in out
    assert "junk\\x1b[31m.txt: not an image" in err


def test_annotate_never_overwrites_without_force(tmp_path, astronaut, models, capsys):
    photo = tmp_path / "face.jpg"
    cv2.imwrite(str(photo), astronaut)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "face.jpg").write_bytes(b"precious")
    args = ["predict", str(photo), "--annotate", str(out_dir), *onnx_models(models)]
    assert run_main(args) == 2
    assert "--annotate would overwrite" in capsys.readouterr().err
    assert (out_dir / "face.jpg").read_bytes() == b"precious"
    assert run_main([*args, "--force"]) == 0
    drawn = cv2.imread(str(out_dir / "face.jpg"))
    assert drawn is not None and drawn.shape == astronaut.shape
    assert np.abs(drawn.astype(int) - astronaut.astype(int)).max() > 100
