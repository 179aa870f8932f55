"""`caffe-compat pull` and `caffe-compat zoo` against a real HTTP server on 127.0.0.1: a small
synthesized caffemodel in SqueezeNet 1.1's released shapes, served locally, with cards pointing
at it (no internet, no released weights)."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest
from _http import Server, send

from caffe_compat.app.download import download
from caffe_compat.app.pretrained import load_pretrained
from caffe_compat.app.pull import model_state, pull
from caffe_compat.cli.main import main
from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.writer import definitions_only, write_caffemodel, write_mean
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.zoo import FileSpec, Source, load_card, read_card

BASE = "squeezenet_v1_1"
FILE = "squeezenet_v1.1.caffemodel"


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> bytes:
    """A caffemodel in SqueezeNet 1.1's released layer names and shapes (about 5 MB)."""
    loaded = load_net(load_card(BASE).prototxt_path())
    path = tmp_path_factory.mktemp("synth") / FILE
    write_caffemodel(path, definitions_only(loaded.net.layer), synthesize(loaded, method="he"))
    return path.read_bytes()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    srv = Server()
    yield srv
    srv.close()


def card_toml(folder, urls: list[str], identity: str) -> str:
    """A card file of the user's own: the zoo's SqueezeNet prototxt and labels, local sources."""
    sources = "".join(f'\n[[weights.sources]]\nkind = "file"\nurl = "{url}"\n' for url in urls)
    text = f"""name = "tiny_squeeze"
title = "SqueezeNet 1.1 shapes, synthesized weights"
task = "classification"
paper = "none"
license = "test data"
prototxt = "squeezenet_v1_1.prototxt"
output = "prob"
labels_file = "imagenet_labels.txt"
default_mode = "center"

[weights]
file = "{FILE}"
{identity}
{sources}
[mean]
values = [104.0, 117.0, 123.0]

[input]
blob = "data"
shape = [3, 227, 227]
channel_order = "BGR"
value_range = [0.0, 255.0]
resize = 256
"""
    path = folder / "tiny_squeeze.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def run(capsys, *args: str) -> tuple[int, list[str], str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def files_under(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_pull_downloads_checks_converts_and_caches(server, weights, tmp_path, capsys):
    server.routes["/w/squeezenet.caffemodel"] = send(weights)
    url = server.url("/w/squeezenet.caffemodel")
    card = card_toml(tmp_path, [url], f'sha1 = "{sha1(weights)}"\nidentity_source = "the test"')
    home = tmp_path / "home"
    code, lines, err = run(capsys, "pull", card, "--cache-dir", str(home), "--no-progress")
    assert code == 0 and err == ""
    stored = home / "tiny_squeeze" / FILE
    assert [line.split(":")[0] for line in lines] == [
        "weights",
        "identity",
        "convert",
        "cache",
        "ready",
    ]
    assert lines[0] == f"weights: downloaded {stored} from {url} ({len(weights):,} bytes)"
    assert lines[1] == f"identity: {FILE} matches sha1 {sha1(weights)} (published in the test)"
    assert "26 layers, 1,235,496 parameters from caffemodel-v2 weights" in lines[2]
    assert "output prob [1, 1000, 1, 1]" in lines[2]
    entry = home / "tiny_squeeze" / "converted" / f"squeezenet_v1.1.{git_blob(weights)}.npz"
    assert lines[3].startswith(f"cache: wrote {entry} (")
    assert stored.read_bytes() == weights and entry.is_file()

    del server.routes["/w/squeezenet.caffemodel"]  # a second pull needs no network
    code, lines, _ = run(capsys, "pull", card, "--cache-dir", str(home))
    assert code == 0
    assert lines[0] == f"weights: found {stored} ({len(weights):,} bytes)"
    assert "from the conversion cache" in lines[2] and lines[3] == f"cache: up to date, {entry}"

    server.routes["/w/squeezenet.caffemodel"] = send(weights)
    code, lines, _ = run(capsys, "pull", card, "--cache-dir", str(home), "--force")
    assert code == 0 and lines[0].startswith("weights: downloaded") and "cache: wrote" in lines[3]
    assert sorted(p.name for p in files_under(home)) == sorted(
        [FILE, entry.name, entry.name + ".sha256"]
    )


def test_a_wrong_sha1_is_rejected_and_nothing_is_kept(server, weights, tmp_path, capsys):
    evil = weights[:-1] + bytes([weights[-1] ^ 1])
    server.routes["/w"] = send(evil)
    url = server.url("/w")
    card = card_toml(tmp_path, [url], f'sha1 = "{sha1(weights)}"')
    home = tmp_path / "home"
    code, lines, err = run(capsys, "pull", card, "--cache-dir", str(home), "--no-progress")
    assert code == 2 and lines == [] and err.count("\n") == 1
    assert f"wrong file: expected sha1 {sha1(weights)}, got sha1 {sha1(evil)}" in err
    assert f"put it at exactly {home / 'tiny_squeeze' / FILE}" in err and url in err
    assert files_under(home) == []


def test_a_wrong_file_already_in_the_cache_is_named_and_kept(weights, tmp_path, capsys):
    card = card_toml(tmp_path, ["http://127.0.0.1:9/w"], f'sha1 = "{sha1(weights)}"')
    stored = tmp_path / "home" / "tiny_squeeze" / FILE
    stored.parent.mkdir(parents=True)
    stored.write_bytes(weights[:1000])
    code, _, err = run(capsys, "pull", card, "--cache-dir", str(tmp_path / "home"))
    assert code == 2 and err.count("\n") == 1
    assert f"sha1 {sha1(weights[:1000])} (1000 bytes), expected {sha1(weights)}" in err
    assert stored.read_bytes() == weights[:1000]


def test_offline_says_which_file_where_and_from_where(tmp_path, capsys):
    home = tmp_path / "home"
    code, lines, err = run(capsys, "pull", "vgg_ilsvrc_16", "--cache-dir", str(home), "--offline")
    assert code == 2 and lines == [] and err.count("\n") == 1
    path = home / "vgg_ilsvrc_16" / "VGG_ILSVRC_16_layers.caffemodel"
    assert "VGG_ILSVRC_16_layers.caffemodel" in err and f"put it at exactly {path} " in err
    for source in load_card("vgg_ilsvrc_16").weights.sources:
        assert source.url in err
    assert "--offline" in err and files_under(home) == []


def test_no_network_gives_the_same_instructions(tmp_path, capsys):
    server = Server()
    url = server.url("/w")
    server.close()  # nothing listens there now
    card = card_toml(tmp_path, [url], 'sha1 = "' + "0" * 40 + '"')
    code, _, err = run(capsys, "pull", card, "--cache-dir", str(tmp_path / "home"))
    assert code == 2 and err.count("\n") == 1
    assert "could not be downloaded" in err and "cannot connect" in err
    assert f"put it at exactly {tmp_path / 'home' / 'tiny_squeeze' / FILE}" in err


def test_a_model_without_a_published_identity_prints_the_copys(server, weights, tmp_path):
    server.routes["/w"] = send(weights)
    note = 'identity_note = "not published anywhere"'
    card_path = card_toml(tmp_path, [server.url("/w")], note)
    lines: list[str] = []
    pull(read_card(card_path), cache_dir=tmp_path, progress=False, report=lines.append)
    digest = hashlib.sha256(weights).hexdigest()
    assert lines[1] == (
        "identity: no published identity to check (see the card's identity_note); this copy "
        f"has sha256 {digest}, sha1 {sha1(weights)}"
    )


def test_the_mean_file_is_pulled_too_or_its_place_named(server, weights, tmp_path):
    mean = tmp_path / "mean.binaryproto"
    write_mean(mean, np.full((3, 4, 4), 7.0, np.float32))
    data = mean.read_bytes()
    server.routes["/w"] = send(weights)
    server.routes["/m"] = send(data)
    card = zoo_card(weights, server.url("/w"))
    spec = FileSpec("mean.binaryproto", git_blob(data), (Source(server.url("/m"), "file"),))
    lines: list[str] = []
    got = pull(dataclasses.replace(card, mean=spec), cache_dir=tmp_path, report=lines.append)
    assert got.mean == tmp_path / BASE / "mean.binaryproto" and got.mean.read_bytes() == data
    assert lines[-2].startswith("mean: downloaded")
    page = FileSpec(
        "ResNet_mean.binaryproto",
        None,
        (Source("https://x.invalid/p", "page"),),
        identity_note="none",
    )
    lines.clear()
    got = pull(dataclasses.replace(card, mean=page), cache_dir=tmp_path, report=lines.append)
    assert got.mean is None
    assert lines[-2].startswith("mean: not in the cache: ResNet_mean.binaryproto")
    assert f"put it at exactly {tmp_path / BASE / 'ResNet_mean.binaryproto'}" in lines[-2]


def zoo_card(data: bytes, *urls: str):
    """The zoo's SqueezeNet card with the synthetic file's identities and local sources."""
    card = load_card(BASE)
    spec = dataclasses.replace(
        card.weights,
        sha1=sha1(data),
        git_blob=git_blob(data),
        sources=tuple(Source(url, "file") for url in urls),
    )
    return dataclasses.replace(card, weights=spec)


def test_zoo_lists_every_model_with_its_cache_state(server, weights, tmp_path, capsys):
    server.routes["/w"] = send(weights)
    pull(zoo_card(weights, server.url("/w")), cache_dir=tmp_path, report=lambda line: None)
    nsfw = tmp_path / "open_nsfw" / "resnet_50_1by2_nsfw.caffemodel"
    nsfw.parent.mkdir()
    nsfw.write_bytes(b"x" * 1234)  # there, not converted (and not checked: listing never hashes)
    code, lines, _ = run(capsys, "zoo", "--cache-dir", str(tmp_path))
    assert code == 0 and lines[0].split() == ["NAME", "TASK", "SIZE", "STATE", "TITLE"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) >= {"bvlc_alexnet", "res10_300x300_ssd", "vgg_ilsvrc_16", "levi_hassner_age"}
    assert rows[BASE].split()[1:4] == ["classification", f"{len(weights) / 1e6:.1f}", "MB"]
    assert rows[BASE].split()[4] == "converted" and load_card(BASE).title in rows[BASE]
    assert rows["open_nsfw"].split()[2:5] == ["0.0", "MB", "cached"]
    assert rows["vgg_ilsvrc_16"].split()[2:5] == [">=553.4", "MB", "-"]
    assert rows["res10_300x300_ssd"].split()[1] == "detection"

    code, lines, _ = run(capsys, "zoo", "--cache-dir", str(tmp_path), "--json")
    listed = {entry["name"]: entry for entry in json.loads("\n".join(lines))}
    assert listed[BASE]["converted"] and listed[BASE]["size"] == len(weights)
    assert listed[BASE]["size_kind"] == "file" and listed[BASE]["labels"] == 1000
    assert listed["vgg_ilsvrc_16"]["identity"] == {} and listed["vgg_ilsvrc_16"]["identity_note"]
    assert listed["vgg_ilsvrc_16"]["size"] == 4 * 138_357_544
    assert listed["bvlc_alexnet"]["identity"] == {"sha1": load_card("bvlc_alexnet").weights.sha1}
    assert not listed["open_nsfw"]["converted"] and listed["open_nsfw"]["cached"]
    assert model_state("bvlc_googlenet", tmp_path).size_kind == "estimate"


def test_download_checks_sha1(server, tmp_path):
    data = b"caffe" * 1000
    server.routes["/w"] = send(data)
    got = download(server.url("/w"), tmp_path / "a", sha1=sha1(data), progress=False)
    assert got.sha1 == sha1(data) and (tmp_path / "a").read_bytes() == data
    with pytest.raises(CaffeCompatError, match=f"expected sha1 {'0' * 40}, got sha1 {sha1(data)}"):
        download(server.url("/w"), tmp_path / "b", sha1="0" * 40, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def test_load_pretrained_checks_sha1_and_runs_the_pulled_model(server, weights, tmp_path):
    server.routes["/w"] = send(weights)
    card = zoo_card(weights, server.url("/w"))
    pull(card, cache_dir=tmp_path, report=lambda line: None)
    model = load_pretrained(card, cache_dir=tmp_path)
    assert model.labels == load_card(BASE).labels and model.card is card
    wrong = dataclasses.replace(card, weights=dataclasses.replace(card.weights, sha1="1" * 40))
    with pytest.raises(CaffeCompatError, match=f"sha1 {sha1(weights)} .* expected {'1' * 40}"):
        load_pretrained(wrong, cache_dir=tmp_path)
