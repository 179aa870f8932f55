"""Write-then-rename, so a failed or interrupted write never leaves a half-written file behind.

Temporary files are hidden siblings of their targets, ``.<stem>.<pid>.<random>.partial<suffix>``
(the real extension last: some writers, torch.export among them, insist on it). They are created
with mode 0666 minus the umask, as ``open()`` would, not ``mkstemp``'s fixed 0600, so outputs get
the permissions the user chose. The pid in the name lets a later run remove the leftovers of an
interrupted one (``remove_stale_partials``) without touching a write still in progress.

An output path that holds a folder, device node, FIFO, socket or symbolic link is refused in
one line (``check_target``): the rename would replace it, and a device or FIFO is nothing a
model file belongs in.

Several outputs of one job are written as a set (``atomic_outputs``): every temporary file is
complete before any target is touched, and no old target survives beside new ones.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import re
import secrets
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import CaffeCompatError, Remedy

_LINK_UNSUPPORTED = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


def _split(target: Path) -> tuple[str, str]:
    return target.stem, target.suffix


def new_partial(target: Path) -> tuple[Path, int]:
    """A new, empty temporary file beside ``target`` and its mode (0666 minus the umask); the
    caller deletes or renames it."""
    stem, suffix = _split(target)
    while True:
        tmp = target.with_name(f".{stem}.{os.getpid()}.{secrets.token_hex(4)}.partial{suffix}")
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        except FileExistsError:
            continue
        try:
            return tmp, os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)


_NOT_REGULAR = {
    stat.S_IFDIR: "a folder",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class NotRegularFileError(CaffeCompatError, OSError):
    """An output path holds something that is not a regular file: one line for the CLI, and an
    ``OSError`` to callers that treat an unwritable place as such (a cache goes on uncached)."""


def check_target(target: Path) -> None:
    """Refuse, in one line, an output path that holds anything but a regular file: renaming over
    a device node, FIFO, socket or symbolic link would replace it (a link is not followed), and
    over a folder fails."""
    try:
        mode = os.lstat(target).st_mode
    except OSError:
        return  # nothing there, or nothing reachable: the write itself says why it fails
    if not stat.S_ISREG(mode):
        what = _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
        raise NotRegularFileError(
            f"the output path is {what}, not a regular file: refusing to replace it (choose "
            "another name)",
            path=str(target),
        )


def _refuse(existing: Sequence[Path]) -> CaffeCompatError:
    return CaffeCompatError(
        f"refusing to overwrite {', '.join(map(str, existing))}",
        remedy=Remedy("force", purpose="to overwrite them"),
    )


def _place_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` only if ``target`` does not exist (no check-then-act race)."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        raise _refuse([target]) from None
    except OSError as exc:
        if exc.errno not in _LINK_UNSUPPORTED:
            raise
        if os.path.lexists(target):  # no hard links here: check, then rename
            raise _refuse([target]) from None
        os.replace(tmp, target)
    else:
        tmp.unlink()


def _commit(temps: Sequence[Path], targets: Sequence[Path], overwrite: bool) -> None:
    if not overwrite:
        existing = [t for t in targets if os.path.lexists(t)]
        if existing:
            raise _refuse(existing)
        placed: list[Path] = []
        try:
            for tmp, target in zip(temps, targets):
                _place_new(tmp, target)
                placed.append(target)
        except BaseException:
            for target in placed:  # all or none: these are ours, just written
                target.unlink(missing_ok=True)
            raise
        return
    if len(targets) > 1:
        # Old outputs go first, so a run killed between the renames leaves some outputs missing,
        # never new ones beside old ones made from other sources.
        for target in targets:
            if os.path.lexists(target) and not target.is_dir():
                target.unlink()
    for tmp, target in zip(temps, targets):
        os.replace(tmp, target)


@contextlib.contextmanager
def atomic_outputs(
    paths: Sequence[str | os.PathLike[str]], *, overwrite: bool = True
) -> Iterator[list[Path]]:
    """Temporary paths beside each of ``paths``; all moved into place only if the block
    succeeds. ``overwrite=False`` refuses (``CaffeCompatError``) when any target exists."""
    targets = [Path(p) for p in paths]
    for target in targets:
        check_target(target)
    temps: list[Path] = []
    modes: list[int] = []
    try:
        for target in targets:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp, mode = new_partial(target)
            temps.append(tmp)
            modes.append(mode)
        yield list(temps)
        for tmp, mode in zip(temps, modes):
            # A writer that replaced the file (instead of writing into it) got another mode.
            if tmp.exists() and tmp.stat().st_mode & 0o777 != mode:
                tmp.chmod(mode)
        for target in targets:  # again: something may have been put there meanwhile
            check_target(target)
        _commit(temps, targets, overwrite)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds."""
    with atomic_outputs([path], overwrite=overwrite) as (tmp,):
        yield tmp


def process_alive(pid: int) -> bool:
    """Whether ``pid`` may still run (True where it cannot tell): files it owns are kept."""
    if pid == os.getpid() or os.name != "posix":  # os.kill(pid, 0) only probes on POSIX
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    except OSError:
        return True  # cannot tell: keep the file
    return True


def remove_stale_partials(path: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files of ``path`` left by interrupted writes of this user whose process
    is gone; return them. Files of running writes, other users and other programs are kept."""
    target = Path(path)
    stem, suffix = _split(target)
    pattern = re.compile(
        rf"\.{re.escape(stem)}\.(\d+)\.[0-9a-f]{{8}}\.partial{re.escape(suffix)}", re.DOTALL
    )
    removed: list[Path] = []
    uid = os.getuid() if hasattr(os, "getuid") else None
    for found in target.parent.glob(f".{glob.escape(stem)}.*.partial{glob.escape(suffix)}"):
        match = pattern.fullmatch(found.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            info = found.lstat()
            if (uid is None or info.st_uid == uid) and found.is_file() and not found.is_symlink():
                found.unlink()
                removed.append(found)
    return removed
