"""File identities: size, SHA-256 and git blob id (what ``git hash-object FILE`` prints).

The released Levi-Hassner files are published with git blob ids, so both are computed in one pass.
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

    def as_metadata(self) -> str:
        return f"size={self.size} sha256={self.sha256} git-blob={self.git_blob}"


class IdentityHasher:
    """Incremental SHA-256 + git blob id for a stream whose total size is known up front."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._sha = hashlib.sha256()
        self._git = hashlib.sha1(b"blob %d\0" % size)
        self._seen = 0

    def update(self, chunk: bytes | memoryview) -> None:
        self._sha.update(chunk)
        self._git.update(chunk)
        self._seen += len(chunk)

    def identity(self) -> Identity:
        if self._seen != self.size:
            raise ValueError(f"hashed {self._seen} bytes, expected {self.size}")
        return Identity(self.size, self._sha.hexdigest(), self._git.hexdigest())


def file_identity(path: str | os.PathLike[str]) -> Identity:
    """Identity of a file on disk, read in 1 MiB chunks."""
    path = Path(path)
    hasher = IdentityHasher(path.stat().st_size)
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.identity()
