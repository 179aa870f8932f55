"""load_pretrained end to end: a synthesized caffemodel in the official shapes, served over HTTP on
127.0.0.1, downloaded, identity-checked, converted, cached, and equal to a fresh conversion."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest
import torch

from caffe_compat.app import pretrained
from caffe_compat.app.pretrained import cache_home, decode, load_pretrained, mean_image, model_info
from caffe_compat.converters.torch.model import to_torch
from caffe_compat.errors import CaffeCompatError
from caffe_compat.io.writer import definitions_only, write_caffemodel, write_mean
from caffe_compat.ir.load import load_net
from caffe_compat.tools.synth import synthesize
from caffe_compat.verify.inputs import feeds_for
from caffe_compat.zoo import ModelCard, Source, load_card

NAME = "levi_hassner_age"
WEIGHTS = "age_net.caffemodel"


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        data, keep = self.server.files.get(self.path, (None, None))  # type: ignore[attr-defined]
        if data is None:
            self.send_error(404, "Not Found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:keep])  # keep < len(data): the server closes mid-transfer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server(monkeypatch):
    """{path: (bytes, bytes actually sent)} served on a random free port of 127.0.0.1."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.files = {}  # type: ignore[attr-defined]
    threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True).start()
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"  # type: ignore[attr-defined]
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def caffemodels(tmp_path_factory) -> dict[int, bytes]:
    """Two different synthesized age nets in the released shapes, as caffemodel bytes."""
    folder = tmp_path_factory.mktemp("synth")
    out = {}
    for seed in (0, 1):
        loaded = load_net(load_card(NAME).prototxt_path())
        blobs = synthesize(loaded, seed=seed)  # calibrated: outputs vary with the input
        path = folder / f"seed{seed}.caffemodel"
        write_caffemodel(path, definitions_only(loaded.net.layer), blobs)
        out[seed] = path.read_bytes()
    return out


def card_for(data: bytes, *urls: str) -> ModelCard:
    """The zoo card with the test file's identity and the local server as its only sources."""
    card = load_card(NAME)
    weights = dataclasses.replace(
        card.weights, git_blob=git_blob(data), sources=tuple(Source(u, "file") for u in urls)
    )
    return dataclasses.replace(card, weights=weights)


def fresh(data: bytes, tmp_path) -> torch.nn.Module:
    path = tmp_path / "fresh.caffemodel"
    path.write_bytes(data)
    return to_torch(load_net(load_card(NAME).prototxt_path(), path).graph)


def inputs() -> torch.Tensor:
    """Image-like, mean-subtracted inputs (the synthesized weights are calibrated on such)."""
    return torch.from_numpy(feeds_for({"data": (1, 3, 227, 227)}, 4, seed=3)["data"])


def assert_same(model: torch.nn.Module, reference: torch.nn.Module) -> None:
    """Bit-identical fc7, fc8 (logits: not saturated like prob can be) and prob on seeded inputs."""
    x = inputs()
    with torch.no_grad():
        got = model(x, outputs=["fc7", "fc8", "prob"])
        want = reference(x, outputs=["fc7", "fc8", "prob"])
    for blob in want:
        assert torch.equal(got[blob], want[blob]), blob


def files_under(folder) -> list:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def one_line_error(call) -> str:
    with pytest.raises(CaffeCompatError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_download_convert_and_equal_a_fresh_conversion(server, caffemodels, tmp_path):
    data = caffemodels[0]
    server.files["/w/age_net.caffemodel"] = (data, None)
    card = card_for(data, server.url("/w/age_net.caffemodel"))
    model = load_pretrained(card, cache_dir=tmp_path / "home", download=True, progress=False)
    stored = tmp_path / "home" / NAME / WEIGHTS
    assert stored.read_bytes() == data
    assert not model.training and model.labels == card.labels and model.card is card
    assert_same(model, fresh(data, tmp_path))
    with torch.no_grad():
        prob = model(inputs())  # the plain nn.Module call: the prob blob
    assert prob.shape == (4, 8) and len(set(prob.argmax(1).tolist())) > 1
    entry, record = sorted((tmp_path / "home" / NAME / "converted").iterdir())
    assert entry.name == f"age_net.{git_blob(data)}.npz"
    assert record.name == entry.name + ".sha256"
    assert record.read_text().strip() == hashlib.sha256(entry.read_bytes()).hexdigest()


def test_a_second_load_reads_the_cache_not_the_caffemodel(
    server, caffemodels, tmp_path, monkeypatch
):
    data = caffemodels[0]
    server.files["/age_net.caffemodel"] = (data, None)
    card = card_for(data, server.url("/age_net.caffemodel"))
    first = load_pretrained(card, cache_dir=tmp_path, download=True, progress=False)
    del server.files["/age_net.caffemodel"]  # no second download either

    def no_parse(*args, **kwargs):
        raise AssertionError("the caffemodel was parsed again")

    monkeypatch.setattr(pretrained, "read_weights", no_parse)
    second = load_pretrained(card, cache_dir=tmp_path, download=True, progress=False)
    assert_same(second, first)
    assert_same(second, fresh(data, tmp_path))


def test_changed_weights_invalidate_the_cache(caffemodels, tmp_path, monkeypatch):
    old, new = caffemodels[0], caffemodels[1]
    folder = tmp_path / NAME
    folder.mkdir()
    (folder / WEIGHTS).write_bytes(old)
    load_pretrained(card_for(old), cache_dir=tmp_path)
    (folder / WEIGHTS).write_bytes(new)
    parsed = []
    real = pretrained.read_weights
    monkeypatch.setattr(pretrained, "read_weights", lambda p: parsed.append(p) or real(p))
    model = load_pretrained(card_for(new), cache_dir=tmp_path)
    assert parsed == [folder / WEIGHTS]
    entry = f"age_net.{git_blob(new)}.npz"
    assert sorted(p.name for p in (folder / "converted").iterdir()) == [entry, entry + ".sha256"]
    assert_same(model, fresh(new, tmp_path))


def test_a_damaged_cache_entry_is_rebuilt(caffemodels, tmp_path):
    data = caffemodels[0]
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    load_pretrained(card_for(data), cache_dir=tmp_path)
    entry, _ = sorted((tmp_path / NAME / "converted").iterdir())
    entry.write_bytes(b"PK\x03\x04garbage")
    model = load_pretrained(card_for(data), cache_dir=tmp_path)
    assert_same(model, fresh(data, tmp_path))
    with np.load(entry) as rebuilt:
        assert json.loads(str(rebuilt["manifest"]))["git_blob"] == git_blob(data)


def _flip_head(entry) -> None:
    """Rewrite the cached fc8 weights so every class's score is negated (the argmax moves), with
    the manifest, names and identity fields untouched: only the content hash can tell."""
    with np.load(entry, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    manifest = json.loads(str(arrays["manifest"]))
    index = 0
    for name, count in manifest["layers"]:
        if name == "fc8":
            arrays[f"b{index}"] = -arrays[f"b{index}"]
            arrays[f"b{index + 1}"] = -arrays[f"b{index + 1}"]
        index += count
    with open(entry, "wb") as handle:
        np.savez(handle, **arrays)


def test_edited_cache_arrays_are_caught_by_the_content_hash(caffemodels, tmp_path, caplog):
    data = caffemodels[0]
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    load_pretrained(card_for(data), cache_dir=tmp_path)
    entry, record = sorted((tmp_path / NAME / "converted").iterdir())
    _flip_head(entry)
    with np.load(entry) as edited:  # what the manifest alone would have accepted
        assert json.loads(str(edited["manifest"]))["git_blob"] == git_blob(data)
    with caplog.at_level("WARNING", logger="caffe_compat.app.pretrained"):
        model = load_pretrained(card_for(data), cache_dir=tmp_path)
    assert "changed since written" in caplog.text and str(entry) in caplog.text
    assert_same(model, fresh(data, tmp_path))  # rebuilt from the caffemodel
    assert record.read_text().strip() == hashlib.sha256(entry.read_bytes()).hexdigest()
    caplog.clear()
    record.unlink()  # no record: not trusted either
    with caplog.at_level("WARNING", logger="caffe_compat.app.pretrained"):
        assert_same(load_pretrained(card_for(data), cache_dir=tmp_path), fresh(data, tmp_path))
    assert "no valid hash record" in caplog.text


def test_a_wrong_file_from_the_server_is_rejected_and_not_kept(server, caffemodels, tmp_path):
    server.files["/age_net.caffemodel"] = (caffemodels[1], None)
    url = server.url("/age_net.caffemodel")
    card = card_for(caffemodels[0], url)
    message = one_line_error(
        lambda: load_pretrained(card, cache_dir=tmp_path, download=True, progress=False)
    )
    assert url in message
    assert git_blob(caffemodels[0]) in message and git_blob(caffemodels[1]) in message
    assert files_under(tmp_path) == []


def test_404_and_truncated_downloads_leave_nothing(server, caffemodels, tmp_path):
    data = caffemodels[0]
    server.files["/cut.caffemodel"] = (data, 1_000_000)
    missing, cut = server.url("/gone.caffemodel"), server.url("/cut.caffemodel")
    message = one_line_error(
        lambda: load_pretrained(card_for(data, missing, cut), cache_dir=tmp_path, download=True)
    )
    assert f"{missing}: HTTP 404 Not Found" in message
    assert f"{cut}: truncated download" in message
    assert files_under(tmp_path) == []


def test_a_missing_file_says_what_where_and_from_where(tmp_path):
    card = load_card(NAME)
    message = one_line_error(lambda: load_pretrained(NAME, cache_dir=tmp_path))
    assert str(tmp_path / NAME / WEIGHTS) in message
    for source in card.weights.sources:
        assert source.url in message
    assert "download=True" in message and "zip archive, member age_net.caffemodel" in message


def test_the_genuine_identity_is_enforced_unless_waived(caffemodels, tmp_path):
    data = caffemodels[0]
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    message = one_line_error(lambda: load_pretrained(NAME, cache_dir=tmp_path, download=True))
    assert git_blob(data) in message and load_card(NAME).weights.git_blob in message
    assert "verify_identity=False" in message
    assert (tmp_path / NAME / WEIGHTS).read_bytes() == data  # never overwritten
    model = load_pretrained(NAME, cache_dir=tmp_path, verify_identity=False)
    assert_same(model, fresh(data, tmp_path))


def test_cache_folder_precedence(caffemodels, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("CAFFE_COMPAT_HOME", raising=False)
    assert cache_home() == tmp_path / "user" / ".cache" / "caffe-compat"
    monkeypatch.setenv("CAFFE_COMPAT_HOME", str(tmp_path / "env"))
    assert cache_home() == tmp_path / "env"
    assert cache_home(tmp_path / "arg") == tmp_path / "arg"
    data = caffemodels[0]
    (tmp_path / "env" / NAME).mkdir(parents=True)
    (tmp_path / "env" / NAME / WEIGHTS).write_bytes(data)
    assert load_pretrained(card_for(data)).labels == load_card(NAME).labels
    message = one_line_error(lambda: load_pretrained(card_for(data), cache_dir=tmp_path / "arg"))
    assert str(tmp_path / "arg" / NAME / WEIGHTS) in message


def test_the_onnx_backend_matches_torch(caffemodels, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    data = caffemodels[0]
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    proto = load_pretrained(card_for(data), cache_dir=tmp_path, backend="onnx")
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["labels"]) == list(load_card(NAME).labels)
    assert git_blob(data) in meta["source_weights"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = inputs()
    (onnx_prob,) = session.run(None, {"data": x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_prob, fresh(data, tmp_path)(x).numpy(), rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_model_moves_to_the_requested_device(caffemodels, tmp_path):
    data = caffemodels[0]
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    model = load_pretrained(card_for(data), cache_dir=tmp_path, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    x = inputs()
    with torch.no_grad():  # the model's own exact mode: no cuDNN, no TF32
        got = model(x.cuda(), outputs=["fc8", "prob"])
        want = fresh(data, tmp_path)(x, outputs=["fc8", "prob"])
    torch.testing.assert_close(got["prob"].cpu(), want["prob"], rtol=0, atol=1e-5)
    limit = 1e-5 * float(want["fc8"].abs().max())
    torch.testing.assert_close(got["fc8"].cpu(), want["fc8"], rtol=0, atol=limit)


def test_bad_arguments_are_one_line(tmp_path):
    assert "backend must be one of torch, onnx" in one_line_error(
        lambda: load_pretrained(NAME, cache_dir=tmp_path, backend="tf")
    )
    message = one_line_error(lambda: load_pretrained("vgg16", cache_dir=tmp_path))
    assert "known models: bvlc_alexnet, " in message
    assert "levi_hassner_age, levi_hassner_gender" in message and "vgg_ilsvrc_16" in message


def test_model_info_is_the_card():
    assert model_info("levi_hassner_gender") == load_card("levi_hassner_gender")
    assert model_info("levi_hassner_gender").labels == ("Male", "Female")


def test_mean_image_is_downloaded_and_checked(server, tmp_path):
    mean = np.random.default_rng(1).uniform(0, 255, (3, 256, 256)).astype(np.float32)
    write_mean(tmp_path / "mean.binaryproto", mean)
    data = (tmp_path / "mean.binaryproto").read_bytes()
    server.files["/mean.binaryproto"] = (data, None)
    card = load_card(NAME)
    spec = dataclasses.replace(
        card.mean,
        git_blob=git_blob(data),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        sources=(Source(server.url("/mean.binaryproto"), "file"),),
    )
    card = dataclasses.replace(card, mean=spec)
    home = tmp_path / "home"
    assert "download=True" in one_line_error(lambda: mean_image(card, cache_dir=home))
    np.testing.assert_array_equal(
        mean_image(card, cache_dir=home, download=True, progress=False), mean
    )


def test_decode_names_the_most_likely_class():
    labels = load_card(NAME).labels
    prob = torch.zeros(2, 8)
    prob[0, 4], prob[1, 7] = 0.9, 0.6
    assert decode(prob, labels) == [
        ("(25, 32)", pytest.approx(0.9)),
        ("(60, 100)", pytest.approx(0.6)),
    ]
    assert "2 outputs per row but 8 labels" in one_line_error(
        lambda: decode(np.ones((1, 2)), labels)
    )


def test_a_caffe_written_caffemodel_gives_real_caffes_outputs(caffe_reference, tmp_path):
    """A binary written by real BVLC Caffe, loaded twice (parsed, then from the cache), against
    the blobs Caffe itself computed (tolerances from caffe_reference/README.md)."""
    data = (caffe_reference / "age_seed3_caffe_written.caffemodel").read_bytes()
    gold = np.load(caffe_reference / "age_seed3_blobs.npz")
    (tmp_path / NAME).mkdir()
    (tmp_path / NAME / WEIGHTS).write_bytes(data)
    for _ in range(2):
        model = load_pretrained(card_for(data), cache_dir=tmp_path)
        with torch.no_grad():
            got = model(torch.from_numpy(gold["data"]), outputs=["fc8", "prob"])
        fc8_limit = 1e-4 * float(np.abs(gold["fc8"]).max())
        np.testing.assert_allclose(got["fc8"].numpy(), gold["fc8"], rtol=0, atol=fc8_limit)
        np.testing.assert_allclose(got["prob"].numpy(), gold["prob"], rtol=0, atol=1e-4)
    assert len(list((tmp_path / NAME / "converted").iterdir())) == 2  # entry and its hash
