"""File identities: size, SHA-256, SHA-1 and git blob id (what ``git hash-object FILE`` prints).

Released weights are published with one of these: git blob ids for files committed to a public
repository (Levi-Hassner, SqueezeNet, open_nsfw), plain SHA-1 for the BVLC model zoo and OpenCV's
download lists. All are computed in one pass, so any of them can be checked.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Identity:
    size: int
    sha256: str
    git_blob: str
    sha1: str = ""

    def as_metadata(self) -> str:
        return f"size={self.size} sha256={self.sha256} git-blob={self.git_blob} sha1={self.sha1}"


class IdentityHasher:
    """Incremental SHA-256 + git blob id for a stream whose total size is known up front."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sha = hashlib.sha256()
        self._git = hashlib.sha1(b"blob %d\0" % size)
        self._sha1 = hashlib.sha1()
        self._seen = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha.update(chunk)
        self._git.update(chunk)
        self._sha1.update(chunk)
        self._seen += len(chunk)

    def identity(self) -> Identity:
        if self._seen != self.size:
            raise ValueError(f"hashed {self._seen} bytes, expected {self.size}")
        return Identity(
            self.size, self._sha.hexdigest(), self._git.hexdigest(), self._sha1.hexdigest()
        )


def file_identity(path: str | os.PathLike[str]) -> Identity:
    """Identity of a file on disk, read in 1 MiB chunks."""
    path = Path(path)
    hasher = IdentityHasher(path.stat().st_size)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.identity()
