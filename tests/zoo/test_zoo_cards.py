"""The classic Caffe model zoo cards: published identities, labels, means and preprocessing as the
releases state them, and the schema extensions they need (label files, SHA-1, identity notes,
value-only means, tasks)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest

from caffe_compat.errors import CaffeCompatError
from caffe_compat.zoo import list_models, load_card, parse_card, tomllib

# (weights file, {identity kind: value}) as published; the source of each is in the comment.
PUBLISHED = {
    # BVLC/caffe models/<name>/readme.md: caffemodel and sha1.
    "bvlc_alexnet": (
        "bvlc_alexnet.caffemodel",
        {"sha1": "9116a64c0fbe4459d18f4bb6b56d647b63920377"},
    ),
    "bvlc_reference_caffenet": (
        "bvlc_reference_caffenet.caffemodel",
        {"sha1": "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"},
    ),
    "bvlc_googlenet": (
        "bvlc_googlenet.caffemodel",
        {"sha1": "405fc5acd08a3bb12de8ee5e23a96bec22f08204"},
    ),
    "bvlc_reference_rcnn_ilsvrc13": (
        "bvlc_reference_rcnn_ilsvrc13.caffemodel",
        {"sha1": "bdd8abb885819cba5e2fe1eb36235f2319477e64"},
    ),
    "finetune_flickr_style": (
        "finetune_flickr_style.caffemodel",
        {"sha1": "b61b5cef7d771b53b0c488e78d35ccadc073e9cf"},
    ),
    # OpenCV samples/dnn/models.yml (opencv_fd) and opencv_extra download_models.py.
    "res10_300x300_ssd": (
        "res10_300x300_ssd_iter_140000.caffemodel",
        {"sha1": "15aa726b4d46d9f023526d85537db81cbc8dd566"},
    ),
    # `git ls-tree` of yahoo/open_nsfw (the weights are committed there).
    "open_nsfw": (
        "resnet_50_1by2_nsfw.caffemodel",
        {"git_blob": "c4f31059fcc1433112eefd3d100e4410a704d6a7"},
    ),
    # `git ls-tree` of DeepScale/SqueezeNet; sha1 from OpenCV's download_models.py / models.yml.
    "squeezenet_v1_1": (
        "squeezenet_v1.1.caffemodel",
        {
            "git_blob": "9d2fc33abf653a6e8b2ee6cc63ede0e72ec67f44",
            "sha1": "3397f026368a45ae236403ccc81cfcbe8ebe1bd0",
        },
    ),
    # OpenCV opencv_extra testdata/dnn/download_models.py (the authors publish none).
    "resnet_50": (
        "ResNet-50-model.caffemodel",
        {"sha1": "b7c79ccc21ad0479cddc0dd78b1d20c4d722908d"},
    ),
    # Nothing published anywhere: the card must say so.
    "vgg_ilsvrc_16": ("VGG_ILSVRC_16_layers.caffemodel", {}),
}
CLASSIC = sorted(PUBLISHED)
# BVLC/caffe examples/finetune_flickr_style/style_names.txt, in order.
FLICKR_STYLES = (
    "Detailed Pastel Melancholy Noir HDR Vintage Long_Exposure Horror Sunny Bright Hazy Bokeh "
    "Serene Texture Ethereal Macro Depth_of_Field Geometric_Composition Minimal Romantic"
)
# The fc-rcnn column order as BVLC/caffe examples/detection.ipynb prints it (first, last 15).
RCNN_HEAD = (
    "accordion|airplane|ant|antelope|apple|armadillo|artichoke|axe|baby bed|backpack|bagel|"
    "balance beam|banana|band aid|banjo"
)
RCNN_TAIL = (
    "trombone|trumpet|turtle|tv or monitor|unicycle|vacuum|violin|volleyball|waffle iron|washer|"
    "water bottle|watercraft|whale|wine bottle|zebra"
)
# Per-channel averages (B, G, R) of python/caffe/imagenet/ilsvrc_2012_mean.npy (BVLC/caffe).
ILSVRC12_MEAN = (104.0069879317889, 116.66876761696767, 122.6789143406786)


def test_every_classic_model_has_a_card():
    assert set(CLASSIC) <= set(list_models())


@pytest.mark.parametrize("name", CLASSIC)
def test_identity_is_the_published_one_or_its_absence_is_explained(name):
    weights = load_card(name).weights
    file, identity = PUBLISHED[name]
    assert weights.file == file
    assert dict(weights.identities()) == identity
    if identity:
        assert weights.identity_source and weights.identity_note is None
    else:
        note = weights.identity_note or ""
        assert "not published" in note.lower() and "cannot be computed offline" in note
    for kind, value in identity.items():
        assert re.fullmatch(r"[0-9a-f]{40}", value), kind


@pytest.mark.parametrize("name", CLASSIC)
def test_sources_download_the_file_or_are_pages(name):
    sources = load_card(name).weights.sources
    direct = [s for s in sources if s.downloadable]
    assert direct, "every classic model has a direct download"
    assert all(s.kind in ("file", "page") for s in sources)
    assert all(s.url.startswith(("http://", "https://")) for s in sources)


def test_bvlc_models_download_from_the_readme_urls():
    for name in ("bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet"):
        card = load_card(name)
        assert (
            card.weights.sources[0].url == f"http://dl.caffe.berkeleyvision.org/{name}.caffemodel"
        )
        assert "readme.md" in card.weights.identity_source


def test_imagenet_labels_are_caffe_synset_words():
    path = files("caffe_compat.zoo") / "imagenet_labels.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1000 and len(set(lines)) == 1000
    assert lines[0] == "n01440764 tench, Tinca tinca"
    assert lines[1] == "n01443537 goldfish, Carassius auratus"
    assert lines[-1] == "n15075141 toilet tissue, toilet paper, bathroom tissue"
    wnids = [line.split(" ", 1)[0] for line in lines]
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert wnids == sorted(wnids)  # Caffe's class index order is synset id order
    for name in ("bvlc_alexnet", "bvlc_googlenet", "resnet_50", "squeezenet_v1_1", "vgg_ilsvrc_16"):
        card = load_card(name)
        assert card.labels_file == "imagenet_labels.txt" and card.labels == tuple(lines)


def test_other_label_sets():
    rcnn = load_card("bvlc_reference_rcnn_ilsvrc13").labels
    assert len(rcnn) == 200 and len(set(rcnn)) == 200
    assert "|".join(rcnn[:15]) == RCNN_HEAD and "|".join(rcnn[-15:]) == RCNN_TAIL
    flickr = load_card("finetune_flickr_style").labels
    assert flickr == tuple(s.replace("_", " ") for s in FLICKR_STYLES.split())
    assert load_card("open_nsfw").labels == ("SFW", "NSFW")
    assert load_card("res10_300x300_ssd").labels == ("background", "face")


@pytest.mark.parametrize(
    "name, mean, shape, resize, mode, output",
    [
        ("bvlc_alexnet", ILSVRC12_MEAN, (3, 227, 227), 256, "center", "prob"),
        ("bvlc_reference_caffenet", ILSVRC12_MEAN, (3, 227, 227), 256, "center", "prob"),
        ("bvlc_googlenet", (104.0, 117.0, 123.0), (3, 224, 224), 256, "center", "prob"),
        ("bvlc_reference_rcnn_ilsvrc13", ILSVRC12_MEAN, (3, 227, 227), 227, "opencv", "fc-rcnn"),
        ("finetune_flickr_style", ILSVRC12_MEAN, (3, 227, 227), 256, "center", "prob"),
        ("res10_300x300_ssd", (104.0, 177.0, 123.0), (3, 300, 300), 300, "opencv", "detection_out"),
        ("open_nsfw", (104.0, 117.0, 123.0), (3, 224, 224), 256, "center", "prob"),
        ("squeezenet_v1_1", (104.0, 117.0, 123.0), (3, 227, 227), 256, "center", "prob"),
        ("resnet_50", None, (3, 224, 224), 256, "center", "prob"),
        ("vgg_ilsvrc_16", (103.939, 116.779, 123.68), (3, 224, 224), 256, "center", "prob"),
    ],
)
def test_preprocessing_as_released(name, mean, shape, resize, mode, output):
    card = load_card(name)
    assert card.mean_values == mean and card.mean_note
    assert card.input.shape == shape and card.input.resize == resize
    assert card.input.channel_order == "BGR" and card.input.value_range == (0.0, 255.0)
    assert card.input.scale == 1.0 and card.default_mode == mode and card.output == output
    assert card.task == ("detection" if name == "res10_300x300_ssd" else "classification")
    assert card.title and card.paper and card.license


def test_resnet_mean_is_a_file_without_a_published_identity():
    mean = load_card("resnet_50").mean
    assert mean is not None and mean.file == "ResNet_mean.binaryproto"
    assert not mean.identities() and "cannot be computed offline" in mean.identity_note
    assert [s.kind for s in mean.sources] == ["page"]


def _table(name: str) -> dict:
    return tomllib.loads((files("caffe_compat.zoo") / f"{name}.toml").read_text(encoding="utf-8"))


def _error(table: dict, tmp_path=None) -> str:
    with pytest.raises(CaffeCompatError) as info:
        parse_card(table, path="bad.toml")
    message = str(info.value)
    assert message.startswith("bad.toml: ") and "\n" not in message
    return message


@pytest.mark.parametrize(
    "edit, field, words",
    [
        (lambda t: t["weights"].update(sha1="9116A6"), "weights.sha1", "lower-case hex"),
        (lambda t: t["weights"].pop("sha1"), "weights.identity_note", "must say why"),
        (lambda t: t.update(labels=["a"]), "labels", "exactly one of"),
        (lambda t: t.pop("labels_file"), "labels", "exactly one of"),
        (lambda t: t.update(labels_file="no_such_labels.txt"), "labels_file", "cannot read"),
        (lambda t: t.update(task="segmentation"), "task", "classification, detection"),
        (lambda t: t["mean"].pop("values"), "mean.values", "give per-channel values"),
        (lambda t: t["mean"].update(sha1="0" * 40), "mean.sha1", "only a mean with a file"),
        (lambda t: t["input"].update(scale=0), "input.scale", "positive"),
        (lambda t: t["weights"].update(identity_note=" "), "weights.identity_note", "empty"),
        (lambda t: t["weights"].update(max_size=10), "weights.max_size", "not both"),
        (lambda t: t["weights"].update(size=0), "weights.size", "positive"),
        (
            lambda t: t["weights"]["sources"][0].update(max_size=9),
            "weights.sources[0].max_size",
            "only zip sources",
        ),
    ],
)
def test_schema_extensions_reject_bad_fields(edit, field, words):
    table = _table("bvlc_alexnet")
    edit(table)
    message = _error(table)
    assert f"card field {field}:" in message and words in message


# The exact sizes the cards state, as published (the card names each source); a file without a
# published size states a bound instead.
PUBLISHED_SIZES = {
    "bvlc_alexnet": 243_862_414,
    "bvlc_reference_caffenet": 243_862_418,
    "bvlc_googlenet": 53_533_754,
    "vgg_ilsvrc_16": 553_432_081,
    "resnet_50": 102_462_397,
    "squeezenet_v1_1": 4_950_080,
    "res10_300x300_ssd": 10_666_211,
}


@pytest.mark.parametrize("name", list_models())
def test_every_download_is_capped_by_the_card(name):
    """Every downloadable file states its size or a bound, every archive a bound, so an endless
    body stops near the file's size, not at the downloader's 2 GiB default (issue 21); a
    bound or size is never below the deploy net's float32 parameters, which the file holds."""
    from caffe_compat.app.pull import estimated_size

    card = load_card(name)
    specs = [card.weights] + ([card.mean] if card.mean is not None else [])
    for spec in specs:
        if any(source.downloadable for source in spec.sources):
            assert spec.size_cap is not None, f"{name}: {spec.file} states no size or bound"
        for source in spec.sources:
            assert source.kind != "zip" or source.max_size is not None, source.url
    assert card.weights.size == PUBLISHED_SIZES.get(name)
    assert card.weights.size_cap >= estimated_size(card)
    if card.weights.size is None:  # a bound: at most twice the parameters plus 1 MiB
        assert card.weights.size_cap <= 2 * estimated_size(card) + (2 << 20)


def test_label_files_are_read_strictly(tmp_path):
    table = _table("bvlc_alexnet")
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n\n\n", encoding="utf-8")
    table["labels_file"] = str(labels)  # an absolute path: a custom card's own labels
    assert parse_card(table).labels == ("cat", "dog")
    labels.write_text("cat\n\ndog\n", encoding="utf-8")
    assert "line 2 is empty" in _error(table)
    labels.write_bytes(b"\xff\xfe")
    assert "not UTF-8" in _error(table)
    labels.write_text("\n", encoding="utf-8")
    assert "holds no labels" in _error(table)


def test_a_mean_may_be_values_or_a_file_or_both():
    table = _table("resnet_50")
    card = parse_card(table)
    assert card.mean_values is None and card.mean.file == "ResNet_mean.binaryproto"
    table["mean"]["values"] = [1, 2, 3]
    assert parse_card(table).mean_values == (1.0, 2.0, 3.0)
    del table["mean"]["identity_note"]
    assert "card field mean.identity_note: missing" in _error(table)
