"""Card names and file names are plain names: no card can place files outside its cache folder."""

from __future__ import annotations

import dataclasses

import pytest

from caffe_compat.app.pretrained import load_pretrained, model_folder
from caffe_compat.errors import CaffeCompatError
from caffe_compat.zoo import load_card, parse_card, tomllib

HOSTILE_NAMES = ["../../x", "..", ".", "/etc", "a/b", ".hidden", "Age", "a\x1bb", "a\0b", ""]


def _table() -> dict:
    return tomllib.loads(
        load_card("levi_hassner_age").prototxt_path().with_suffix(".toml").read_text()
    )


def _refused(call) -> str:
    with pytest.raises(CaffeCompatError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "\x1b" not in message
    return message


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_card_names_are_refused_when_read(name):
    table = _table()
    table["name"] = name
    message = _refused(lambda: parse_card(table, path="bad.toml"))
    assert message.startswith("bad.toml: card field name:")


@pytest.mark.parametrize("name", ["../../x", "..", "/etc"])
def test_a_card_built_in_code_cannot_escape_the_cache(tmp_path, name):
    card = dataclasses.replace(load_card("levi_hassner_age"), name=name)
    _refused(lambda: model_folder(card, tmp_path / "home"))
    _refused(lambda: load_pretrained(card, cache_dir=tmp_path / "home"))
    assert not (tmp_path / "home").exists() and sorted(tmp_path.iterdir()) == []


@pytest.mark.parametrize("file", ["..", ".", "a/b", "/etc/passwd", ".hidden", "a\\b", "x\0y"])
def test_hostile_file_names_are_refused(file):
    table = _table()
    table["mean"]["file"] = file
    assert "card field mean.file:" in _refused(lambda: parse_card(table, path="bad.toml"))


def test_a_relative_prototxt_must_be_a_zoo_file():
    table = _table()
    table["prototxt"] = "../../../etc/passwd"
    assert "card field prototxt:" in _refused(lambda: parse_card(table, path="bad.toml"))


def test_valid_names_still_read():
    table = _table()
    table["name"] = "my-model_v1.2"
    assert parse_card(table).name == "my-model_v1.2"
