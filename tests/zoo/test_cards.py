"""Zoo cards: fields from FACTS.md, the project's own prototxts in the released shapes and names."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.ir.load import load_net
from caffe_compat.zoo import Source, list_models, load_card, parse_card, read_card

# From FACTS.md (git blob ids of the genuine files; labels; per-channel means B, G, R).
GENUINE = {
    "levi_hassner_age": ("age_net.caffemodel", "8391af479b658b9f4f3ace7eec6be86aae079309"),
    "levi_hassner_gender": ("gender_net.caffemodel", "87862497f48764ea24eb162c21f542c2e007311e"),
}
MEAN_BLOB = "15c6049ca096085e3e741134b31e52e0873b534e"
LABELS = {
    "levi_hassner_age": (
        "(0, 2)",
        "(4, 6)",
        "(8, 12)",
        "(15, 20)",
        "(25, 32)",
        "(38, 43)",
        "(48, 53)",
        "(60, 100)",
    ),
    "levi_hassner_gender": ("Male", "Female"),
}
MEAN_VALUES = (78.4263377603, 87.7689143744, 114.895847746)
ZIP_URL = (
    "https://osnathassner.github.io/talhassner/projects/cnn_agegender/"
    "cnn_age_gender_models_and_data.0.0.2.zip"
)
RELEASED_DEPLOY = {
    "levi_hassner_age": "deploy_age.prototxt",
    "levi_hassner_gender": "deploy_gender.prototxt",
}
MODELS = sorted(GENUINE)


def test_the_zoo_lists_both_models():
    assert set(MODELS) <= set(list_models())


@pytest.mark.parametrize("name", MODELS)
def test_card_fields_match_the_facts(name):
    card = load_card(name)
    weights_file, blob = GENUINE[name]
    assert card.name == name
    assert card.weights.file == weights_file and card.weights.git_blob == blob
    assert card.mean.file == "mean.binaryproto" and card.mean.git_blob == MEAN_BLOB
    assert card.labels == LABELS[name]
    assert card.mean_values == MEAN_VALUES
    assert card.input.shape == (3, 227, 227) and card.input.channel_order == "BGR"
    assert card.input.value_range == (0.0, 255.0) and card.input.resize == 256
    assert card.default_mode in ("oversample", "center", "opencv")
    assert card.output == "prob"
    assert "Levi" in card.paper and "Hassner" in card.paper and card.license
    kinds = {s.kind: s for s in card.weights.sources}
    assert kinds["file"].url == (
        f"https://raw.githubusercontent.com/GilLevi/AgeGenderDeepLearning/master/models/{weights_file}"
    )
    assert kinds["zip"].url == ZIP_URL and kinds["zip"].member == weights_file
    assert kinds["page"].url == "https://gist.github.com/GilLevi/c9e99062283c719c03de"
    assert not kinds["page"].downloadable and kinds["file"].downloadable


@pytest.mark.parametrize("name", MODELS)
def test_prototxt_has_the_released_shapes(name):
    card = load_card(name)
    path = card.prototxt_path()
    assert path.is_file() and path.read_text().lstrip("# ").startswith("Levi & Hassner")
    loaded = load_net(path)
    assert loaded.prototxt_format == "V2"
    assert loaded.graph.inputs == {"data": (1, 3, 227, 227)}
    shapes, params = loaded.graph.shapes, loaded.inference.params
    assert shapes["pool5"] == (1, 384, 7, 7)
    assert params["conv1"] == [(96, 3, 7, 7), (96,)]
    assert params["conv2"] == [(256, 96, 5, 5), (256,)]
    assert params["conv3"] == [(384, 256, 3, 3), (384,)]
    assert params["fc6"] == [(512, 18816), (512,)]
    assert params["fc7"] == [(512, 512), (512,)]
    assert params["fc8"] == [(len(card.labels), 512), (len(card.labels),)]
    assert shapes["prob"] == (1, len(card.labels))
    assert loaded.graph.blob_of[loaded.graph.outputs[0]] == card.output


@pytest.mark.parametrize("name", MODELS)
def test_layers_equal_the_released_deploy(name, shared):
    """Same names in the same order, and (after V1 -> V2 upgrade) the very same layer messages."""
    ours = [
        layer
        for layer in load_net(load_card(name).prototxt_path()).net.layer
        if layer.type != "Input"
    ]
    released = [
        layer
        for layer in load_net(shared / RELEASED_DEPLOY[name]).net.layer
        if layer.type != "Input"
    ]
    assert [layer.name for layer in ours] == [layer.name for layer in released]
    assert [layer.name for layer in ours][:4] == ["conv1", "relu1", "pool1", "norm1"]
    assert [layer.name for layer in ours][-2:] == ["fc8", "prob"]
    for mine, theirs in zip(ours, released):
        assert mine == theirs, mine.name


def test_mean_identity_and_values_match_the_released_mean(shared):
    from caffe_compat.io import read_mean

    data = (shared / "mean.binaryproto").read_bytes()
    card = load_card("levi_hassner_age")
    assert card.mean.size == len(data)
    assert card.mean.sha256 == hashlib.sha256(data).hexdigest()
    assert card.mean.git_blob == hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    per_channel = read_mean(shared / "mean.binaryproto").astype(np.float64).mean(axis=(1, 2))
    np.testing.assert_allclose(per_channel, card.mean_values, rtol=0, atol=1e-4)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(CaffeCompatError) as info:
        load_card("levi_hassner_agee")
    message = str(info.value)
    assert "levi_hassner_agee" in message and "levi_hassner_age, levi_hassner_gender" in message
    assert "\n" not in message


def _table(name="levi_hassner_age") -> dict:
    from caffe_compat import zoo

    return zoo.tomllib.loads((load_card(name).prototxt_path().with_suffix(".toml")).read_text())


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda t: t["weights"].update(git_blob="8391AF"), "weights.git_blob"),
        (lambda t: t["weights"]["sources"][1].pop("member"), "weights.sources[1].member"),
        (lambda t: t["weights"]["sources"][0].update(kind="torrent"), "weights.sources[0].kind"),
        (lambda t: t["mean"].update(values=[1.0, 2.0]), "mean.values"),
        (lambda t: t["input"].update(shape=[3, "227", 227]), "input.shape"),
        (lambda t: t.update(labels="Male"), "labels"),
        (lambda t: t.update(default_mode="tencrop"), "default_mode"),
        (lambda t: t.update(lables=["x"]), "lables"),
        (lambda t: t.pop("prototxt"), "prototxt"),
        (lambda t: t["weights"].update(file="../age_net.caffemodel"), "weights.file"),
        (lambda t: t["mean"].update(size=True), "mean.size"),
    ],
)
def test_invalid_cards_name_the_field(edit, field):
    table = _table()
    edit(table)
    with pytest.raises(CaffeCompatError) as info:
        parse_card(table, path="bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: ") and f"card field {field}:" in message
    assert "\n" not in message


def test_a_custom_card_file_reads_like_a_zoo_card(tmp_path):
    text = load_card("levi_hassner_gender").prototxt_path().with_suffix(".toml").read_text()
    prototxt = load_card("levi_hassner_gender").prototxt_path()
    custom = tmp_path / "mine.toml"
    custom.write_text(
        text.replace('name = "levi_hassner_gender"', 'name = "my_gender"').replace(
            'prototxt = "levi_hassner_gender.prototxt"', f'prototxt = "{prototxt}"'
        )
    )
    card = read_card(custom)
    assert card.name == "my_gender" and card.prototxt_path() == prototxt
    assert dataclasses.replace(
        card,
        name="levi_hassner_gender",
        card_path="",
        prototxt=load_card("levi_hassner_gender").prototxt,
    ) == dataclasses.replace(load_card("levi_hassner_gender"), card_path="")
    with pytest.raises(CaffeCompatError, match="not valid TOML"):
        (tmp_path / "broken.toml").write_text("name = ")
        read_card(tmp_path / "broken.toml")


def test_source_descriptions_say_what_each_url_is():
    assert "direct file" in Source("https://x/a", "file").describe()
    assert "zip archive, member a" in Source("https://x/z.zip", "zip", "a").describe()
    assert "web page" in Source("https://x/p", "page").describe()


def test_cards_and_prototxts_ship_as_package_data():
    from importlib.resources import files

    names = {entry.name for entry in files("caffe_compat.zoo").iterdir()}
    for name in MODELS:
        assert {f"{name}.toml", f"{name}.prototxt"} <= names
    assert Path(str(files("caffe_compat.zoo"))).name == "zoo"
