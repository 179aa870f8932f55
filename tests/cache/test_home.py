"""The cache home and its folders: where it is, which folders are refused (as ssh refuses keys
others could change), the modes of the folders it makes, and the key that signs entries."""

from __future__ import annotations

import os
import stat

import pytest

from caffe_compat.cache import home as cache_home_module
from caffe_compat.cache.home import (
    KEY_FILE,
    UnsafeCacheError,
    cache_home,
    cache_key,
    checked_folder,
)


def one_line(call) -> str:
    with pytest.raises(UnsafeCacheError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("CAFFE_COMPAT_HOME", raising=False)
    assert cache_home() == tmp_path / "user" / ".cache" / "caffe-compat"
    monkeypatch.setenv("CAFFE_COMPAT_HOME", str(tmp_path / "env"))
    assert cache_home() == tmp_path / "env"
    assert cache_home(tmp_path / "arg") == tmp_path / "arg"


def test_folders_are_made_never_writable_by_others(tmp_path):
    previous = os.umask(0o002)  # a umask that would make group-writable folders
    try:
        made = checked_folder(tmp_path / "home", "model", "converted", create=True)
    finally:
        os.umask(previous)
    assert made == tmp_path / "home" / "model" / "converted"
    for folder in (made, made.parent, made.parent.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert checked_folder(tmp_path / "absent", "x") == tmp_path / "absent" / "x"  # not made
    assert not (tmp_path / "absent").exists()


@pytest.mark.parametrize("level", ["home", "model"])
def test_a_symlinked_cache_folder_is_refused(tmp_path, level):
    real = tmp_path / "elsewhere"
    (real / "model").mkdir(parents=True)
    home = tmp_path / "home"
    if level == "home":
        home.symlink_to(real)
    else:
        home.mkdir()
        (home / "model").symlink_to(real / "model")
    link = home if level == "home" else home / "model"
    for create in (False, True):
        message = one_line(lambda create=create: checked_folder(home, "model", create=create))
        assert message.startswith(f"{link}: cache folder is a symbolic link")
        assert "refused" in message


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_world_writable_folder_is_refused(tmp_path, mode):
    (tmp_path / "home" / "model").mkdir(parents=True)
    (tmp_path / "home" / "model").chmod(mode)
    message = one_line(lambda: checked_folder(tmp_path / "home", "model"))
    assert "writable by every user" in message
    assert f"chmod go-w {tmp_path / 'home' / 'model'}" in message


def test_a_group_writable_folder_is_refused_unless_the_group_is_the_owners_own(
    tmp_path, monkeypatch
):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o775)
    monkeypatch.setattr(cache_home_module, "_private_group", lambda gid, uid: False)
    assert "writable by its group" in one_line(lambda: checked_folder(home))
    monkeypatch.setattr(cache_home_module, "_private_group", lambda gid, uid: True)
    assert checked_folder(home) == home  # a user private group (umask 002 setups)


def test_a_folder_of_another_user_is_refused(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    if os.geteuid() == 0:
        os.chown(home, 54321, -1)  # root may give it away
    else:
        monkeypatch.setattr(os, "geteuid", lambda: home.stat().st_uid + 1)
    message = one_line(lambda: checked_folder(home))
    assert "owned by another user" in message


def test_a_file_in_the_way_is_an_os_error_only_when_creating(tmp_path):
    (tmp_path / "home").write_text("")
    assert checked_folder(tmp_path / "home", "dnn") == tmp_path / "home" / "dnn"
    with pytest.raises(NotADirectoryError):
        checked_folder(tmp_path / "home", "dnn", create=True)


def test_the_key_is_made_once_private_and_kept(tmp_path):
    previous = os.umask(0o022)
    try:
        first = cache_key(tmp_path, create=True)
    finally:
        os.umask(previous)
    assert len(first) == 32
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600  # a secret
    assert cache_key(tmp_path, create=True) == first == cache_key(tmp_path, create=False)
    assert cache_key(tmp_path / "other", create=False) is None


def test_a_malformed_key_is_replaced_with_a_warning(tmp_path, caplog):
    key = tmp_path / KEY_FILE
    key.write_text("not a key")
    key.chmod(0o600)
    assert cache_key(tmp_path, create=False) is None
    with caplog.at_level("WARNING", logger="caffe_compat.cache"):
        new = cache_key(tmp_path, create=True)
    assert len(new) == 32 and "malformed" in caplog.text


@pytest.mark.parametrize("problem", ["open", "link", "folder"])
def test_a_key_others_could_read_or_swap_is_refused(tmp_path, problem):
    cache_key(tmp_path, create=True)
    key = tmp_path / KEY_FILE
    if problem == "open":
        key.chmod(0o644)
    elif problem == "link":
        (tmp_path / "real").write_bytes(key.read_bytes())
        key.unlink()
        key.symlink_to(tmp_path / "real")
    else:
        key.unlink()
        key.mkdir()
    message = one_line(lambda: cache_key(tmp_path, create=True))
    assert message.startswith(f"{key}: cache key") and "refused" in message
