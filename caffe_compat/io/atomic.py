"""Write-then-rename, so a failed or interrupted write never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def _new_temp_file(folder: Path, stem: str, suffix: str) -> Path:
    """A new empty file, created with mode 0o666 so the umask decides its permissions (mkstemp
    would force 0o600 and leave every output unreadable to the group whatever the umask says)."""
    while True:
        path = folder / f".{stem}.{secrets.token_hex(6)}.partial{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real extension last: some writers (torch.export) insist on it.
    tmp = _new_temp_file(target.parent, target.stem, target.suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
