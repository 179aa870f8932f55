"""Binary caffemodels: every layout and encoding round-trips bit-exactly, protobuf's own parser
agrees with our wire walker in both directions, and a file written by real Caffe reads in the
official shapes."""

from __future__ import annotations

import numpy as np
import pytest
from _wire_bytes import field, varint

from caffe_compat.io import read_caffemodel, read_caffemodel_bytes, write_caffemodel
from caffe_compat.ir.load import load_net
from caffe_compat.proto import caffe_pb2

ENCODINGS = ["packed", "unpacked", "double"]
V1 = caffe_pb2.V1LayerParameter


def legacy(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Caffe's V1 blob dims: num, channels, height, width, right-aligned."""
    return (1,) * (4 - len(shape)) + tuple(shape)


def protobuf_arrays(raw: bytes) -> dict[str, list[np.ndarray]]:
    """Decode with protobuf itself and Caffe's Blob::FromProto shape rule, written out here."""
    net = caffe_pb2.NetParameter.FromString(raw)
    out = {}
    for layer in [*net.layer, *net.layers]:
        arrays = []
        for blob in layer.blobs:
            if any(blob.HasField(n) for n in ("num", "channels", "height", "width")):
                shape = (blob.num, blob.channels, blob.height, blob.width)
            else:
                shape = tuple(blob.shape.dim)
            if len(blob.double_data):
                values = np.array(blob.double_data, dtype=np.float64).astype(np.float32)
            else:
                values = np.array(blob.data, dtype=np.float32)
            arrays.append(values.reshape(shape))
        out[layer.name] = arrays
    return out


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("version", [2, 1])
def test_round_trip_is_exact(tmp_path, small_net, v1_net, blobs, version, encoding):
    net = small_net if version == 2 else v1_net
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, net, blobs, version=version, encoding=encoding)
    weights = read_caffemodel(path)
    assert weights.format == f"caffemodel-v{version}"
    assert weights.net_name == "small"
    assert list(weights.layers) == [layer.name for layer in net.layer]
    assert weights.blobs["relu"] == [] and weights.blobs["prob"] == []
    for name, arrays in blobs.items():
        got = weights.blobs[name]
        assert len(got) == len(arrays)
        for read, written in zip(got, arrays):
            assert read.dtype == np.float32
            assert read.shape == (written.shape if version == 2 else legacy(written.shape))
            assert np.array_equal(read.reshape(written.shape), written)


def test_v1_file_holds_enum_types_and_legacy_dims(tmp_path, v1_net, blobs):
    path = tmp_path / "v1.caffemodel"
    write_caffemodel(path, v1_net, blobs, version=1)
    raw = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert len(raw.layer) == 0
    assert [layer.type for layer in raw.layers] == [
        V1.CONVOLUTION,
        V1.RELU,
        V1.INNER_PRODUCT,
        V1.SOFTMAX,
    ]
    fc_weight = raw.layers[2].blobs[0]
    assert (fc_weight.num, fc_weight.channels, fc_weight.height, fc_weight.width) == (1, 1, 4, 175)
    assert len(fc_weight.shape.dim) == 0
    weights = read_caffemodel(path)
    types = {name: layer.type for name, layer in weights.layers.items()}
    assert types == {"conv": "Convolution", "relu": "ReLU", "fc": "InnerProduct", "prob": "Softmax"}


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("version", [2, 1])
def test_protobuf_decodes_our_files_the_same(tmp_path, small_net, v1_net, blobs, version, encoding):
    net = small_net if version == 2 else v1_net
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, net, blobs, version=version, encoding=encoding)
    raw = path.read_bytes()
    theirs = protobuf_arrays(raw)
    ours = read_caffemodel(path)
    assert theirs.keys() == ours.blobs.keys()
    for name, arrays in theirs.items():
        assert len(arrays) == len(ours.blobs[name])
        for a, b in zip(arrays, ours.blobs[name]):
            assert a.shape == b.shape and np.array_equal(a, b)
    if version == 2:
        for layer in caffe_pb2.NetParameter.FromString(raw).layer:
            del layer.blobs[:]
            assert ours.layers[layer.name] == layer


def test_reads_what_protobuf_wrote(tmp_path):
    """protobuf serialises here; legacy dims, double_data beside data, diffs, unknown fields."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((6, 2, 3, 5)).astype(np.float32)
    b = rng.standard_normal(6)  # float64: stored as double_data, read as float32
    fc = rng.standard_normal((7, 11)).astype(np.float32)
    net = caffe_pb2.NetParameter(name="pb")
    conv = net.layer.add(name="conv", type="Convolution", bottom=["x"], top=["y"])
    conv.convolution_param.num_output = 6
    blob = conv.blobs.add()
    blob.shape.dim.extend(w.shape)
    blob.data.extend(w.ravel().tolist())
    blob.diff.extend(np.ones(w.size).tolist())  # gradients: must be skipped
    blob = conv.blobs.add()
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 1, 6
    blob.data.extend([9.0] * 6)  # Caffe uses double_data when both are present
    blob.double_data.extend(b.tolist())
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend(fc.shape)
    blob.data.extend(fc.ravel().tolist())
    raw = net.SerializeToString() + varint(19 << 3) + varint(7)  # unknown top-level field
    weights = read_caffemodel_bytes(raw, name="pb.caffemodel")
    assert np.array_equal(weights.blobs["conv"][0], w)
    assert weights.blobs["conv"][1].shape == (1, 1, 1, 6)
    assert np.array_equal(weights.blobs["conv"][1].ravel(), b.astype(np.float32))
    assert np.array_equal(weights.blobs["fc"][0], fc)
    assert weights.layers["conv"].convolution_param.num_output == 6
    assert weights.net_name == "pb"


def test_reads_v1_that_protobuf_wrote(tmp_path):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((3, 8)).astype(np.float32)
    net = caffe_pb2.NetParameter()
    layer = net.layers.add(name="ip", type=V1.INNER_PRODUCT, blobs_lr=[1, 2], weight_decay=[1, 0])
    blob = layer.blobs.add(num=1, channels=1, height=3, width=8)
    blob.data.extend(w.ravel().tolist())
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(net.SerializeToString())
    weights = read_caffemodel(path)
    assert weights.format == "caffemodel-v1"
    assert np.array_equal(weights.blobs["ip"][0].reshape(3, 8), w)
    ip = weights.layers["ip"]
    assert ip.type == "InnerProduct"
    assert [(p.lr_mult, p.decay_mult) for p in ip.param] == [(1, 1), (2, 0)]


def test_repeated_data_fields_concatenate_as_protobuf_merges_them():
    """Two serialised BlobProtos back to back are one message whose data is both runs in order."""
    first = caffe_pb2.BlobProto(data=[1.0, 2.0, 3.0])
    first.shape.dim.extend([2, 5])
    second = caffe_pb2.BlobProto(data=[4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    third = caffe_pb2.BlobProto(double_data=[])  # an empty message adds nothing
    blob_bytes = first.SerializeToString() + second.SerializeToString() + third.SerializeToString()
    layer = caffe_pb2.LayerParameter(name="ip", type="InnerProduct").SerializeToString()
    raw = field(100, layer + field(7, blob_bytes))
    expected = protobuf_arrays(raw)["ip"][0]
    assert np.array_equal(expected, np.arange(1, 11, dtype=np.float32).reshape(2, 5))
    weights = read_caffemodel_bytes(raw)
    assert np.array_equal(weights.blobs["ip"][0], expected)


def test_mixed_packed_and_unpacked_runs(tmp_path):
    """Unpacked floats (one tag per value) followed by a packed run, as old writers produced."""
    values = np.arange(12, dtype=np.float32) * 0.5
    unpacked = b"".join(b"\x2d" + v.tobytes() for v in values[:5])  # field 5, wire type 5
    packed = field(5, values[5:].tobytes())
    shape = caffe_pb2.BlobProto()
    shape.shape.dim.extend([3, 4])
    blob_bytes = shape.SerializeToString() + unpacked + packed
    layer = caffe_pb2.LayerParameter(name="ip", type="InnerProduct").SerializeToString()
    raw = field(100, layer + field(7, blob_bytes))
    expected = protobuf_arrays(raw)["ip"][0]
    assert np.array_equal(expected, values.reshape(3, 4))
    assert np.array_equal(read_caffemodel_bytes(raw).blobs["ip"][0], expected)


def test_copy_false_gives_read_only_views_of_the_file(tmp_path, small_net, blobs):
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, small_net, blobs)
    views = read_caffemodel(path, copy=False)
    copies = read_caffemodel(path, copy=True)
    for name, arrays in blobs.items():
        for view, copy, written in zip(views.blobs[name], copies.blobs[name], arrays):
            assert not view.flags.writeable and not view.flags.owndata
            assert copy.flags.writeable
            assert np.array_equal(view, written) and np.array_equal(copy, written)
            assert not np.shares_memory(view, copy)
            with pytest.raises(ValueError):
                view[...] = 0
    # The map outlives the reader (and, on POSIX, the file's name).
    path.unlink()
    assert np.array_equal(views.blobs["fc"][0], blobs["fc"][0])


@pytest.mark.parametrize("encoding", ["unpacked", "double"])
def test_copy_false_still_reads_encodings_that_need_converting(
    tmp_path, small_net, blobs, encoding
):
    path = tmp_path / "m.caffemodel"
    write_caffemodel(path, small_net, blobs, encoding=encoding)
    weights = read_caffemodel(path, copy=False)
    assert np.array_equal(weights.blobs["conv"][0], blobs["conv"][0])


def test_double_data_is_rounded_to_float32_as_caffe_does(tmp_path, small_net):
    fine = np.linspace(0.1, 0.9, 4 * 175).reshape(4, 175)  # not representable in float32
    blobs = {"fc": [fine, np.full(4, 1e300)]}  # out of float32 range -> inf, like static_cast
    path = tmp_path / "d.caffemodel"
    write_caffemodel(path, small_net, blobs, encoding="double")
    fc = read_caffemodel(path).blobs["fc"]
    assert np.array_equal(fc[0], fine.astype(np.float32))
    assert np.all(np.isinf(fc[1]))


def test_duplicate_layer_names_are_reported(tmp_path):
    net = caffe_pb2.NetParameter()
    for value in (1.0, 2.0):
        layer = net.layer.add(name="ip", type="InnerProduct")
        blob = layer.blobs.add(data=[value])
        blob.shape.dim.append(1)
    weights = read_caffemodel_bytes(net.SerializeToString())
    assert weights.duplicates == ["ip"]
    assert weights.blobs["ip"][0].tolist() == [2.0]  # Caffe copies layer by layer: the last wins


def test_legacy_dims_load_right_aligned_through_load_net(tmp_path, small_prototxt, v1_net, blobs):
    """A V1 InnerProduct weight stored as 1x1xNxK is Caffe's NxK blob."""
    path = tmp_path / "v1.caffemodel"
    write_caffemodel(path, v1_net, blobs, version=1)
    assert read_caffemodel(path).blobs["fc"][0].shape == (1, 1, 4, 175)
    loaded = load_net(small_prototxt, path)
    assert not loaded.issues
    nodes = {node.name: node for node in loaded.graph.nodes}
    assert [b.shape for b in nodes["fc"].blobs] == [(4, 175), (4,)]
    assert [b.shape for b in nodes["conv"].blobs] == [(5, 3, 3, 3), (5,)]
    assert np.array_equal(nodes["fc"].blobs[0], blobs["fc"][0])
    assert np.array_equal(nodes["conv"].blobs[1], blobs["conv"][1])


OFFICIAL_SHAPES = {  # FACTS.md, age net
    "conv1": [(96, 3, 7, 7), (96,)],
    "conv2": [(256, 96, 5, 5), (256,)],
    "conv3": [(384, 256, 3, 3), (384,)],
    "fc6": [(512, 18816), (512,)],
    "fc7": [(512, 512), (512,)],
    "fc8": [(8, 512), (8,)],
}


def test_real_caffe_written_model_reads_in_the_official_shapes(caffe_reference):
    path = caffe_reference / "age_seed3_caffe_written.caffemodel"
    weights = read_caffemodel(path)
    assert weights.format == "caffemodel-v2"
    shapes = {name: [a.shape for a in arrays] for name, arrays in weights.blobs.items() if arrays}
    assert shapes == OFFICIAL_SHAPES
    assert (
        weights.layer_type("conv1") == "Convolution" and weights.layer_type("fc6") == "InnerProduct"
    )
    assert weights.parameter_count == sum(
        int(np.prod(s)) for shapes_ in OFFICIAL_SHAPES.values() for s in shapes_
    )
    theirs = protobuf_arrays(path.read_bytes())
    for name in shapes:
        for ours, reference in zip(weights.blobs[name], theirs[name]):
            assert np.array_equal(ours, reference)


def test_real_caffe_model_joins_the_official_v1_prototxt(shared, caffe_reference):
    loaded = load_net(
        shared / "deploy_age.prototxt",
        caffe_reference / "age_seed3_caffe_written.caffemodel",
    )
    assert loaded.prototxt_format == "V1" and not loaded.issues
    shapes = {n.name: [b.shape for b in n.blobs] for n in loaded.graph.nodes if n.blobs}
    assert shapes == OFFICIAL_SHAPES


def test_varints_written_are_read_back_and_match_protobuf():
    """The writer's and the dialect mover's varints: protobuf's own encoding, read back by the
    wire walker, at the edges of each byte length."""
    from caffe_compat.io.wire import read_varint, write_key, write_varint

    for value in (0, 1, 127, 128, 300, 2**14 - 1, 2**14, 2**31, 2**63 - 1):
        data = write_varint(value)
        assert read_varint(data, 0, len(data)) == (value, len(data))
        message = caffe_pb2.BlobShape(dim=[value])  # packed int64: key, length, varint
        assert message.SerializeToString()[2:] == data
    assert write_key(8, 2) == bytes([0x42]) and write_key(100, 2) == bytes([0xA2, 0x06])
