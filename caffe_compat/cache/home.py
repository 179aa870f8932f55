"""The cache home, the folders inside it, and the key that signs its entries.

A folder is refused (``UnsafeCacheError``, one line) when someone else could change what it
holds: a symbolic link (its target is not the folder the user named), a folder owned by another
user (root excepted, as ssh allows), writable by every user, or writable by a group other than
the owner's private group. Only the home and the folders inside it are checked, not their
parents. Folders the cache creates get mode 0755 less the umask: never writable by others,
whatever the umask allows, so the cache never makes a folder it would refuse.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import stat
from pathlib import Path

from ..errors import CaffeCompatError
from ..io.atomic import new_partial

ENV_HOME = "CAFFE_COMPAT_HOME"
KEY_FILE = ".cache-key"  # hidden: no model name starts with a dot
FOLDER_MODE = 0o755
_KEY_HEX = 64
log = logging.getLogger(__package__)


class UnsafeCacheError(CaffeCompatError):
    """A cache folder or key that others could change; never used."""


def cache_home(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir`` if given, else ``$CAFFE_COMPAT_HOME``, else
    ``~/.cache/caffe-compat``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "caffe-compat"


def _private_group(gid: int, uid: int) -> bool:
    """The owner's own group with no other member (user private groups, umask 002 setups)."""
    try:
        import grp
        import pwd

        group, user = grp.getgrgid(gid), pwd.getpwuid(uid)
    except (ImportError, KeyError):
        return False
    return group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}


def _problem(info: os.stat_result) -> str | None:
    """Why a folder (lstat'ed) is unsafe, or None."""
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if os.name != "posix":
        return None
    if info.st_uid not in (os.geteuid(), 0):
        return f"owned by another user (uid {info.st_uid})"
    if info.st_mode & stat.S_IWOTH:
        return "writable by every user"
    if info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid, info.st_uid):
        return "writable by its group"
    return None


def _refuse(path: Path, problem: str) -> UnsafeCacheError:
    fix = {
        "a symbolic link": "give the real folder as the cache (cache_dir, --cache-dir or "
        f"${ENV_HOME})",
        "writable by every user": f"chmod go-w {path}",
        "writable by its group": f"chmod g-w {path}",
    }.get(problem, "use a cache folder of your own (cache_dir, --cache-dir or $" + ENV_HOME + ")")
    return UnsafeCacheError(
        f"cache folder is {problem}, so others could change what it holds; refused ({fix})",
        path=str(path),
    )


def checked_folder(home: Path, *parts: str, create: bool = False) -> Path:
    """``home / parts...`` after checking the home and each folder below it that exists
    (``create``: making the missing ones). Raises ``UnsafeCacheError`` for a folder others could
    change, ``OSError`` when ``create`` cannot make one (a file in the way, no permission)."""
    levels = [home]
    for part in parts:
        levels.append(levels[-1] / part)
    for path in levels:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            if not create:
                return home.joinpath(*parts)
            os.mkdir(path, FOLDER_MODE)
            info = os.lstat(path)
        except NotADirectoryError:
            if create:
                raise
            return home.joinpath(*parts)
        problem = _problem(info)
        if problem is not None:
            raise _refuse(path, problem)
        if not stat.S_ISDIR(info.st_mode):
            if create:
                raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
            return home.joinpath(*parts)
    return levels[-1]


def _not_regular(path: Path) -> UnsafeCacheError:
    return UnsafeCacheError(
        "cache key is not a regular file (a link, a folder or a device); refused (delete it)",
        path=str(path),
    )


def _read_key(path: Path) -> bytes | None:
    """The key at ``path`` (None when absent or malformed); ``UnsafeCacheError`` when others
    could read or replace it. Opened without following links or blocking on a FIFO."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_regular(path) from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _not_regular(path)
    with open(fd, "rb") as handle:
        if os.name == "posix" and (info.st_uid != os.geteuid() or info.st_mode & 0o077):
            whose = "owned by another user" if info.st_uid != os.geteuid() else "open to others"
            raise UnsafeCacheError(
                f"cache key is {whose} (mode {stat.S_IMODE(info.st_mode):o}), so others could "
                "sign cache entries; refused (delete it: a new one is made and the cache rebuilt)",
                path=str(path),
            )
        text = handle.read(_KEY_HEX + 2).strip()
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return key if len(key) == _KEY_HEX // 2 else None


def _write_key(path: Path, *, replace: bool) -> None:
    """A new random key at ``path``, mode 0600 (a secret: not the umask's choice); unless
    ``replace``, a key another process placed first is kept."""
    tmp, _ = new_partial(path)
    try:
        os.chmod(tmp, 0o600)
        with open(tmp, "w", encoding="ascii") as handle:
            handle.write(secrets.token_hex(_KEY_HEX // 2) + "\n")
        if replace:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made one first: both use it
        except OSError:  # no hard links on this file system
            if not os.path.lexists(path):
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def cache_key(home: Path, *, create: bool) -> bytes | None:
    """The home's signing key; made when absent (or malformed) if ``create``, else None then.
    ``OSError`` when it cannot be made."""
    path = home / KEY_FILE
    key = _read_key(path)
    if key is not None or not create:
        return key
    malformed = os.path.lexists(path)
    if malformed:
        log.warning("cache key %s is malformed; replacing it (the cache is rebuilt)", path)
    _write_key(path, replace=malformed)
    key = _read_key(path)
    if key is None:
        raise OSError(errno.EIO, "the cache key just written cannot be read back", str(path))
    return key
