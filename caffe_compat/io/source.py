"""Byte sources for the binary readers: a memory map of a file, or bytes already in memory.

The structure of a caffemodel is walked through the map (touching only the pages that hold
headers), while bulk float data is read straight from the file into freshly allocated arrays with
``preadv``, so peak memory stays close to the size of the weights themselves.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
from types import TracebackType

import numpy as np

from ..errors import FileFormatError


def open_regular(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Open a regular file read-only; return (descriptor, size). Errors are one line."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise FileFormatError("no such file", path=name) from None
    except IsADirectoryError:
        raise FileFormatError("is a directory, not a file", path=name) from None
    except OSError as exc:
        raise FileFormatError(f"cannot open: {exc.strerror}", path=name) from None
    info = os.fstat(fd)
    # On POSIX, opening a directory read-only succeeds; only mapping or reading it fails.
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        what = "is a directory" if stat.S_ISDIR(info.st_mode) else "is not a regular file"
        raise FileFormatError(f"{what}, not a file", path=name)
    return fd, info.st_size


class ByteSource:
    """Read-only bytes plus, for files, a descriptor for direct reads into numpy arrays."""

    def __init__(self, data: bytes | memoryview, *, path: str = "<bytes>", fd: int | None = None):
        self.buf = memoryview(data)
        self.path = path
        self.fd = fd
        self._map: mmap.mmap | None = None

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> ByteSource:
        """Memory-map a file; errors name the file."""
        fd, size = open_regular(path)
        if size == 0:
            os.close(fd)
            raise FileFormatError("file is empty (0 bytes)", path=str(path))
        try:
            mapped = mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            os.close(fd)
            raise FileFormatError(f"cannot map the file: {exc}", path=str(path)) from None
        source = cls(mapped, path=str(path), fd=fd)
        source._map = mapped
        return source

    def __len__(self) -> int:
        return len(self.buf)

    def head(self, size: int = 4096) -> bytes:
        """The first ``size`` bytes, for sniffing."""
        return bytes(self.buf[:size])

    def array(self, offset: int, count: int, dtype: str, *, copy: bool = True) -> np.ndarray:
        """``count`` values of ``dtype`` at byte ``offset``: an owned copy or a zero-copy view.

        The caller has already checked that the span lies inside the data, so the allocation
        below is never larger than bytes actually present.
        """
        nbytes = count * np.dtype(dtype).itemsize
        if offset < 0 or offset + nbytes > len(self.buf):
            raise FileFormatError(
                f"internal: span [{offset}, {offset + nbytes}) outside {len(self.buf)} bytes",
                path=self.path,
            )
        if not copy:
            return np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)
        out = np.empty(count, dtype=dtype)
        if self.fd is not None and hasattr(os, "preadv"):
            view = memoryview(out).cast("B")
            done = 0
            while done < view.nbytes:
                got = os.preadv(self.fd, [view[done:]], offset + done)
                if got <= 0:
                    raise FileFormatError("file shrank while being read", path=self.path)
                done += got
        else:
            out[...] = np.frombuffer(self.buf, dtype=dtype, count=count, offset=offset)
        return out

    def close(self) -> None:
        """Release the descriptor; the map stays alive while zero-copy views still use it."""
        # Zero-copy arrays (copy=False) may still use the buffer and the map; they are then
        # freed together with the last such array.
        with contextlib.suppress(BufferError):
            self.buf.release()
        if self._map is not None:
            with contextlib.suppress(BufferError):
                self._map.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> ByteSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
