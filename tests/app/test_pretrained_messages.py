"""What a newcomer reads when a zoo file is missing: which file, the exact path to put it at and
where to get it, in the library's terms (download=True) or the CLI's (--download), also when the
download itself fails (offline)."""

from __future__ import annotations

import dataclasses
import http.server

import pytest

from caffe_compat.app.pretrained import load_pretrained
from caffe_compat.cli.main import main
from caffe_compat.errors import MissingFileError
from caffe_compat.zoo import Source, load_card

NAME, WEIGHTS = "levi_hassner_age", "age_net.caffemodel"


def _closed_port() -> int:
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now: like a machine without network
    return port


def test_offline_download_still_says_where_to_put_the_file(tmp_path):
    card = load_card(NAME)
    port = _closed_port()
    urls = [f"http://127.0.0.1:{port}/a/{WEIGHTS}", f"http://127.0.0.1:{port}/b/{WEIGHTS}"]
    sources = (*(Source(u, "file") for u in urls), Source("https://example.org/models", "page"))
    offline = dataclasses.replace(card, weights=dataclasses.replace(card.weights, sources=sources))
    with pytest.raises(MissingFileError) as info:
        load_pretrained(offline, cache_dir=tmp_path, download=True, progress=False)
    error = info.value
    target = tmp_path / NAME / WEIGHTS
    assert error.expected_path == str(target) and error.file == WEIGHTS
    assert error.sources == [*urls, "https://example.org/models"]
    message = str(error)
    assert "\n" not in message
    for url in urls:
        assert f"{url}: cannot connect" in message  # one line per URL tried
    assert "put it at exactly this path" in message and message.startswith(str(target))
    assert "https://example.org/models (web page)" in message
    assert not target.exists()


def test_missing_weights_name_the_api_option_in_python_and_the_flag_on_the_cli(tmp_path, capsys):
    with pytest.raises(MissingFileError) as info:
        load_pretrained(NAME, cache_dir=tmp_path)
    assert "download=True" in str(info.value) and "--download" not in str(info.value)
    assert info.value.remedy is not None and info.value.remedy.option == "download"
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n")
    assert main(["predict", str(photo), "--cache-dir", str(tmp_path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / NAME / WEIGHTS) in line and "put it at exactly this path" in line
    assert line.endswith("pass --download to download and verify it")
    assert "download=True" not in line
