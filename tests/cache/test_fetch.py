"""Fetch-if-missing: a card's file found, downloaded by the caller's fetch, or one line naming
the file, the exact path to put it at and where to get it; identity-checked; unsafe folders
refused before anything is read or written there."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat

import pytest

from caffe_compat.cache import UnsafeCacheError, obtain
from caffe_compat.errors import CaffeCompatError, MissingFileError, Remedy
from caffe_compat.io.identity import file_identity
from caffe_compat.zoo import Source, load_card

DATA = b"released weights" * 64


def card_with(data: bytes = DATA, *sources: Source):
    card = load_card("levi_hassner_age")
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    spec = dataclasses.replace(card.weights, git_blob=blob, sources=sources or card.weights.sources)
    return dataclasses.replace(card, weights=spec)


def fetcher(data: bytes, calls: list):
    def fetch(spec, folder):
        calls.append(folder)
        (folder / spec.file).write_bytes(data)
        return file_identity(folder / spec.file), spec.sources[0]

    return fetch


def test_a_file_in_the_cache_is_found_and_checked(tmp_path):
    card = card_with()
    (tmp_path / card.name).mkdir()
    (tmp_path / card.name / card.weights.file).write_bytes(DATA)
    got = obtain(card, card.weights, tmp_path, fetch=None)
    assert got.path == tmp_path / card.name / card.weights.file and got.source is None
    assert got.identity.size == len(DATA)
    (tmp_path / card.name / card.weights.file).write_bytes(DATA[:-1])
    with pytest.raises(CaffeCompatError, match=r"not the released age_net\.caffemodel"):
        obtain(card, card.weights, tmp_path, fetch=None)
    assert obtain(card, card.weights, tmp_path, fetch=None, verify_identity=False)


def test_a_missing_file_without_fetch_names_path_sources_and_remedy(tmp_path):
    card = card_with()
    remedy = Remedy("download", purpose="to download and verify it")
    with pytest.raises(MissingFileError) as info:
        obtain(card, card.weights, tmp_path, fetch=None, remedy=remedy, then=", then retry")
    error, message = info.value, str(info.value)
    path = tmp_path / card.name / card.weights.file
    assert error.expected_path == str(path) and error.remedy == remedy
    assert message.startswith(f'{path}: age_net.caffemodel for "levi_hassner_age" is not in')
    assert "put it at exactly this path" in message and ", then retry" in message
    for source in card.weights.sources:
        assert source.url in message
    assert "\n" not in message and not (tmp_path / card.name).exists()  # nothing made


def test_a_download_goes_into_a_safe_new_folder(tmp_path):
    card, calls = card_with(), []
    previous = os.umask(0o002)
    try:
        got = obtain(card, card.weights, tmp_path / "home", fetch=fetcher(DATA, calls))
    finally:
        os.umask(previous)
    folder = tmp_path / "home" / card.name
    assert calls == [folder] and got.source == card.weights.sources[0]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    calls.clear()
    assert obtain(card, card.weights, tmp_path / "home", fetch=fetcher(DATA, calls)).source is None
    assert calls == []  # there already: no download
    obtain(card, card.weights, tmp_path / "home", fetch=fetcher(DATA, calls), force=True)
    assert calls == [folder]


def test_a_failed_download_or_no_direct_source_is_one_line(tmp_path):
    card = card_with()

    def failing(spec, folder):
        raise CaffeCompatError("HTTP 404 Not Found", path="http://x/age_net.caffemodel")

    with pytest.raises(MissingFileError, match=r"could not be downloaded \(.*HTTP 404"):
        obtain(card, card.weights, tmp_path, fetch=failing)
    page_only = card_with(DATA, Source("https://example.org/models", "page"))
    with pytest.raises(MissingFileError, match="has no direct download") as info:
        obtain(page_only, page_only.weights, tmp_path, fetch=failing)
    assert info.value.remedy is None


def test_an_unsafe_model_folder_is_refused_before_use(tmp_path):
    card, calls = card_with(), []
    real = tmp_path / "elsewhere"
    real.mkdir()
    (real / card.weights.file).write_bytes(DATA)  # the right file, in a folder others control
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / card.name).symlink_to(real)
    with pytest.raises(UnsafeCacheError, match="symbolic link"):
        obtain(card, card.weights, tmp_path / "home", fetch=fetcher(DATA, calls))
    real.chmod(0o777)
    (tmp_path / "home" / card.name).unlink()
    real.rename(tmp_path / "home" / card.name)
    with pytest.raises(UnsafeCacheError, match="writable by every user"):
        obtain(card, card.weights, tmp_path / "home", fetch=None)
    assert calls == []
