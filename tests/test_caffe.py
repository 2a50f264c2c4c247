"""The Caffe codec: files real Caffe wrote, both layouts (V2 ``layer`` and V1 ``layers``),
round trips, the deploy prototxt we write, the release prototxts, and refused nets."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import shared_or_skip

from ports import formats
from ports.errors import WeightsError
from ports.formats import caffe
from ports.formats import caffe_schema as cs
from ports.seeded import seeded_weights
from ports.spec import Variant

CAFFE_REAL = "weights/caffe-real"
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"
REAL_V10 = f"{CAFFE_REAL}/squeezenet_v1.0_deep_compression.caffemodel"
REAL_V11 = f"{CAFFE_REAL}/squeezenet_v1.1_seeded.caffemodel"


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# --- an independent protobuf wire-format walker (no schema, no protobuf package) ----------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def fields(buf: bytes):
    """(field number, wire type, value) of one message level."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def raw_blobs(model: bytes, layer_field: int = 100, name_field: int = 1,
              blobs_field: int = 7) -> dict[str, list[np.ndarray]]:
    """Layer name -> blobs as float32 arrays shaped by ``shape.dim`` (V2 numbering)."""
    out = {}
    for number, _, layer in fields(model):
        if number != layer_field:
            continue
        name, blobs = None, []
        for n, _, v in fields(layer):
            if n == name_field:
                name = v.decode()
            elif n == blobs_field:
                dims, data = [], b""
                for bn, bw, bv in fields(v):
                    if bn == 7:  # BlobShape
                        for sn, sw, sv in fields(bv):
                            assert sn == 1 and sw == 2  # packed int64 dims
                            j = 0
                            while j < len(sv):
                                d, j = _varint(sv, j)
                                dims.append(d)
                    elif bn == 5:  # packed float data
                        assert bw == 2
                        data += bv
                blobs.append(np.frombuffer(data, "<f4").reshape(dims))
        out[name] = blobs
    return out


@pytest.fixture(scope="module")
def dc_weights():
    return formats.read(shared_or_skip(DC_NET))


# --- files written by the original Caffe framework -----------------------------------------
def test_real_v10_caffemodel_reads_bit_exact_against_the_net_decode(dc_weights):
    w = formats.read(shared_or_skip(REAL_V10))
    assert w.variant == Variant("1_0", 1000, 1, "none")  # pad 1 from conv_final's params
    assert w.meta["preprocessing"] == "caffe" and "V2 layout" in w.meta["source"]
    assert set(w.tensors) == set(dc_weights.tensors)
    for k in dc_weights.tensors:
        assert bits_equal(w[k], dc_weights[k]), k


def test_real_v11_caffemodel_matches_an_independent_wire_walk():
    path = shared_or_skip(REAL_V11)
    w = formats.read(path)
    assert w.variant == Variant("1_1", 1000, 0, "none")
    raw = raw_blobs(path.read_bytes())
    names = caffe.name_table(w.variant)
    convs = [name for name in raw if raw[name]]
    assert len(convs) == 26
    for name in convs:
        weight, bias = raw[name]
        assert bits_equal(w[f"{names[name]}.weight"], weight.astype(np.float32)), name
        assert bits_equal(w[f"{names[name]}.bias"], bias.astype(np.float32)), name
    assert w.num_params() == 1_235_496


@pytest.mark.parametrize("rel, vid", [
    ("weights/caffe/v1.0/deploy.prototxt", "1_0-p1-none"),
    ("weights/caffe/v1.0/train_val.prototxt", "1_0-p1-none"),
    ("weights/caffe/v1.1/deploy.prototxt", "1_1-p0-none"),
    ("weights/caffe/v1.1/train_val.prototxt", "1_1-p0-none"),
    ("weights/deep-compression/SqueezeNet_deploy.prototxt", "1_0-p1-none"),
])
def test_release_prototxts_describe_their_variant(rel, vid):
    assert caffe.architecture(shared_or_skip(rel)).id == vid


# --- round trips ---------------------------------------------------------------------------
@pytest.mark.parametrize("vid", ["1_0-p1-none", "1_0-p0-simple", "1_1-p0-none",
                                 "1_1-p1-complex", "1_0-p1-complex-c10"])
def test_written_caffemodel_round_trips_bit_exact(tmp_path, vid):
    v = Variant.from_id(vid)
    w = seeded_weights(v)
    written = caffe.write(w, tmp_path / "w.caffemodel")
    assert [p.name for p in written] == ["w.caffemodel", "w.prototxt"]
    back = formats.read(tmp_path / "w.caffemodel")
    assert back.variant == v
    for k in w.tensors:
        assert bits_equal(back[k], w[k]), k
    assert caffe.architecture(tmp_path / "w.prototxt") == v
    # The blobs on the wire, read without our schema, are the same numbers.
    raw = raw_blobs((tmp_path / "w.caffemodel").read_bytes())
    assert bits_equal(raw["conv10"][0], w["conv10.weight"])
    assert bits_equal(raw["fire9/expand3x3"][1], w["fire9.expand3x3.bias"])


def test_real_weights_round_trip_through_our_caffemodel(tmp_path, dc_weights):
    caffe.write(dc_weights, tmp_path / "dc.caffemodel")
    back = formats.read(tmp_path / "dc.caffemodel")
    for k in dc_weights.tensors:
        assert bits_equal(back[k], dc_weights[k]), k


def test_deploy_prototxt_expresses_the_architecture(tmp_path):
    caffe.write(seeded_weights(Variant("1_0", 1000, 1, "complex")), tmp_path / "c.caffemodel")
    text = (tmp_path / "c.prototxt").read_text()
    net = cs.NetParameter()
    from google.protobuf import text_format

    text_format.Parse(text, net)  # strict: every field we write is a declared field
    layers = {layer.name: layer for layer in net.layer}
    conv10 = layers["conv10"].convolution_param
    assert list(conv10.pad) == [1] and conv10.num_output == 1000
    assert list(layers["fire2/concat"].bottom) == ["fire2/expand1x1", "fire2/expand3x3"]
    relu10 = [la for la in net.layer if la.type == "ReLU" and list(la.bottom) == ["conv10"]]
    assert len(relu10) == 1
    pool10 = layers["pool10"].pooling_param
    assert pool10.pool == 1 and pool10.global_pooling  # AVE, global
    pool1 = layers["pool1"].pooling_param
    assert (pool1.pool, pool1.kernel_size, pool1.stride) == (0, 3, 2)
    assert not pool1.HasField("round_mode")  # Caffe's default: CEIL
    assert [la.name for la in net.layer if la.type == "Pooling"] == \
        ["pool1", "pool4", "pool8", "pool10"]
    assert layers["fire2/bypass"].convolution_param.num_output == 128
    assert list(layers["fire2/bypass_sum"].bottom) == ["fire2/concat", "fire2/bypass"]
    assert list(layers["fire3/bypass_sum"].bottom) == ["fire3/concat", "fire2/bypass_sum"]
    assert layers["fire3/bypass_sum"].eltwise_param.operation == 1  # SUM
    assert not any(layer.blobs for layer in net.layer)
    assert net.layer[-1].type == "Softmax" and list(net.layer[-1].bottom) == ["pool10"]


def test_v11_prototxt_pools_after_conv1_fire3_fire5_and_has_no_conv10_padding(tmp_path):
    caffe.write(seeded_weights(Variant("1_1")), tmp_path / "v.caffemodel")
    net = cs.NetParameter()
    from google.protobuf import text_format

    text_format.Parse((tmp_path / "v.prototxt").read_text(), net)
    pools = [(la.name, list(la.bottom)) for la in net.layer if la.type == "Pooling"]
    assert pools == [("pool1", ["conv1"]), ("pool3", ["fire3/concat"]),
                     ("pool5", ["fire5/concat"]), ("pool10", ["conv10"])]
    assert [la for la in net.layer if la.name == "conv10"][0].convolution_param.pad == [0]


def test_write_without_overwrite_keeps_existing_files(tmp_path):
    w = seeded_weights(Variant("1_1"))
    (tmp_path / "w.prototxt").write_text("keep me")
    with pytest.raises(FileExistsError):
        caffe.write(w, tmp_path / "w.caffemodel", overwrite=False)
    assert not (tmp_path / "w.caffemodel").exists()
    assert (tmp_path / "w.prototxt").read_text() == "keep me"


# --- the V1 layout ------------------------------------------------------------------------
V1_TYPES = {"Convolution": "CONVOLUTION", "ReLU": "RELU", "Pooling": "POOLING",
            "Concat": "CONCAT", "Dropout": "DROPOUT", "Eltwise": "ELTWISE",
            "Softmax": "SOFTMAX"}


def v1_caffemodel(weights, *, legacy_dims: bool = True, double: bool = False) -> bytes:
    """The V2 net we write, re-expressed in the V1 ``layers`` layout: enum types, legacy
    4-D blob dims (bias ``1x1x1xO``), ``input``/``input_dim`` instead of an Input layer."""
    v2 = caffe.build_net(weights, with_blobs=True)
    net = cs.NetParameter(name="v1")
    net.input.append("data")
    net.input_dim.extend([1, 3, 227, 227])
    for layer in v2.layer:
        if layer.type == "Input":
            continue
        old = net.layers.add(name=layer.name, type=cs.V1_LAYER_TYPES[V1_TYPES[layer.type]])
        old.bottom.extend(layer.bottom)
        old.top.extend(layer.top)
        for name in ("convolution_param", "pooling_param", "eltwise_param", "dropout_param"):
            if layer.HasField(name):
                getattr(old, name).CopyFrom(getattr(layer, name))
        for blob in layer.blobs:
            dims = list(blob.shape.dim)
            new = old.blobs.add()
            if legacy_dims:
                dims = [1, 1, 1] + dims if len(dims) == 1 else dims
                new.num, new.channels, new.height, new.width = dims
            else:
                new.shape.dim.extend(dims)
            if double:
                new.double_data.extend(blob.data)
            else:
                new.data.extend(blob.data)
    return net.SerializeToString()


@pytest.mark.parametrize("vid", ["1_0-p1-none", "1_1-p0-simple", "1_0-p0-complex"])
def test_v1_layout_reads_bit_exact(tmp_path, vid):
    v = Variant.from_id(vid)
    w = seeded_weights(v)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(v1_caffemodel(w))
    parsed = cs.NetParameter.FromString(path.read_bytes())
    assert len(parsed.layer) == 0 and len(parsed.layers) == len(caffe.build_net(w).layer) - 1
    back = formats.read(path)
    assert back.variant == v and "V1 layout" in back.meta["source"]
    for k in w.tensors:
        assert bits_equal(back[k], w[k]), k


def test_v1_layout_with_double_data_and_shape_dims(tmp_path, dc_weights):
    path = tmp_path / "v1d.caffemodel"
    path.write_bytes(v1_caffemodel(dc_weights, legacy_dims=False, double=True))
    back = formats.read(path)
    for k in dc_weights.tensors:
        assert bits_equal(back[k], dc_weights[k]), k  # float32 -> double -> float32 exact


# --- refused nets -----------------------------------------------------------------------------
def _refuse(path, match: str, **kw) -> WeightsError:
    with pytest.raises(WeightsError, match=match) as info:
        if str(path).endswith(".prototxt") and not kw:
            caffe.architecture(path)
        else:
            formats.read(path, "caffe", **kw)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)
    return info.value


@pytest.fixture(scope="module")
def model_bytes():
    return caffe.encode(seeded_weights(Variant("1_0", 1000, 1, "none")))


def test_truncated_caffemodel_is_refused(tmp_path, model_bytes):
    blob = model_bytes[0]
    path = tmp_path / "cut.caffemodel"
    for cut in (1, 5, 100, 1000, len(blob) // 2, len(blob) - 1):
        path.write_bytes(blob[:cut])
        _refuse(path, "truncated or corrupt|no conv1 layer|no conv10 layer|missing")


def test_garbage_caffemodel_is_refused(tmp_path):
    path = tmp_path / "garbage.caffemodel"
    rng = np.random.default_rng(7)
    for size in (1, 16, 4096, 100_000):
        path.write_bytes(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
        _refuse(path, r"\(caffe\): ")
    path.write_bytes(b"\xff" * 64)
    _refuse(path, "not a Caffe NetParameter protobuf")


def _edit_prototxt(tmp_path, model_bytes, old: str, new: str, count: int = 1):
    text = model_bytes[1].decode()
    assert old in text, old
    path = tmp_path / "edited.prototxt"
    path.write_text(text.replace(old, new, count))
    return path


def test_unknown_layer_type_is_named(tmp_path, model_bytes):
    path = _edit_prototxt(tmp_path, model_bytes, 'name: "fire2/relu_squeeze1x1"\n  type: "ReLU"',
                          'name: "fire2/relu_squeeze1x1"\n  type: "PReLU"')
    e = _refuse(path, r"layer 'fire2/relu_squeeze1x1' has type 'PReLU', which SqueezeNet "
                      "does not use")
    assert "supported:" in str(e)
    # The same prototxt given as the architecture of a caffemodel is refused too.
    model = tmp_path / "m.caffemodel"
    model.write_bytes(model_bytes[0])
    with pytest.raises(WeightsError, match="PReLU"):
        caffe.read(model, prototxt=path)


def test_text_that_is_not_a_net_is_refused(tmp_path):
    path = tmp_path / "junk.prototxt"
    path.write_text("layer { name: 'x' type: \n")
    _refuse(path, "not a Caffe net definition")


@pytest.mark.parametrize("old, new, match", [
    ('bottom: "fire3/expand1x1"\n  bottom: "fire3/expand3x3"',
     'bottom: "fire3/expand3x3"\n  bottom: "fire3/expand1x1"',
     r"'fire3/concat' \(Concat\) joins \['fire3.expand3x3\+relu', 'fire3.expand1x1\+relu'\]"),
    ("pool: MAX\n    kernel_size: 3\n    stride: 2\n  }\n}",
     "pool: MAX\n    kernel_size: 3\n    stride: 2\n    round_mode: FLOOR\n  }\n}",
     "'pool1': max pooling kernel 3 stride 2 pad 0 round_mode FLOOR"),
    ("global_pooling: true", "kernel_size: 13", "'pool10': average pooling over a fixed window"),
    ('name: "relu_conv10"\n  type: "ReLU"', 'name: "relu_conv10"\n  type: "Dropout"',
     r"never computes 'gap\(conv10\+relu\)'"),
    ("num_output: 96\n    kernel_size: 7", "num_output: 96\n    kernel_size: 5",
     r"weight shape \[96, 3, 5, 5\], expected \[96, 3, 7, 7\]"),
    ('top: "pool4"', 'top: "pool4x"', r"'fire5/squeeze1x1' reads blob 'pool4'"),
    ('name: "fire9/squeeze1x1"', 'name: "fire9/squeeze"',
     r"convolution layer 'fire9/squeeze' is not a SqueezeNet layer"),
    ("stride: 2\n  }\n}\nlayer {\n  name: \"relu_conv1\"", "stride: 4\n  }\n}\nlayer {\n  "
     "name: \"relu_conv1\"", r"'conv1' \(conv1\): stride 4 \(expected 2\)"),
])
def test_nets_that_compute_something_else_are_refused(tmp_path, model_bytes, old, new, match):
    _refuse(_edit_prototxt(tmp_path, model_bytes, old, new), match)


def test_caffemodel_without_layer_params_needs_the_architecture(tmp_path, dc_weights):
    """A weights-only V2 file (conv layers with blobs, no params) states no conv10 padding."""
    net = caffe.build_net(dc_weights, with_blobs=True)
    bare = cs.NetParameter()
    for layer in net.layer:
        if layer.type == "Convolution":
            bare.layer.add(name=layer.name, type=layer.type).blobs.extend(layer.blobs)
    path = tmp_path / "bare.caffemodel"
    path.write_bytes(bare.SerializeToString())
    _refuse(path, "does not state conv10's padding")
    v0 = Variant("1_0", 1000, 0)
    assert formats.read(path, variant=v0).variant == v0
    real_deploy = shared_or_skip("weights/caffe/v1.0/deploy.prototxt")
    w = caffe.read(path, prototxt=real_deploy)
    assert w.variant.final_conv_padding == 1
    for k in dc_weights.tensors:
        assert bits_equal(w[k], dc_weights[k]), k


def test_caffemodel_and_prototxt_must_agree(tmp_path, model_bytes):
    model = tmp_path / "p1.caffemodel"
    model.write_bytes(model_bytes[0])  # 1_0-p1-none
    v11 = tmp_path / "v11.caffemodel"
    caffe.write(seeded_weights(Variant("1_0", 1000, 0)), v11)
    with pytest.raises(WeightsError, match="final_conv_padding is 1 here but 0 in"):
        caffe.read(model, prototxt=caffe.prototxt_path(v11))


def test_both_layouts_in_one_file_are_refused(tmp_path, model_bytes):
    net = cs.NetParameter()
    net.ParseFromString(model_bytes[0])
    net.layers.add(name="old", type=cs.V1_LAYER_TYPES["RELU"])
    path = tmp_path / "both.caffemodel"
    path.write_bytes(net.SerializeToString())
    _refuse(path, r"holds both V2 'layer' \(\d+\) and V1 'layers' \(1\)")


def test_wrong_blob_sizes_are_refused(tmp_path, model_bytes):
    net = cs.NetParameter()
    net.ParseFromString(model_bytes[0])
    conv = next(layer for layer in net.layer if layer.name == "fire4/expand3x3")
    del conv.blobs[0].data[-1]
    path = tmp_path / "short.caffemodel"
    path.write_bytes(net.SerializeToString())
    _refuse(path, r"'fire4/expand3x3' \(fire4.expand3x3\): weight blob holds 36863 values, "
                  r"shape \[128, 32, 3, 3\] needs 36864")


def test_a_prototxt_is_not_a_weights_file(tmp_path, model_bytes):
    path = tmp_path / "w.prototxt"
    path.write_bytes(model_bytes[1])
    with pytest.raises(WeightsError, match="holds no weights"):
        caffe.read(path)


def test_schema_builds_message_classes():
    blob = cs.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0, 2.0])
    wire = blob.SerializeToString()
    # data (field 5, packed, 8 bytes), then shape (field 7: packed int64 dims)
    assert wire == b"\x2a\x08" + struct.pack("<2f", 1, 2) + b"\x3a\x04\x0a\x02\x02\x03"
    assert cs.PoolingParameter().round_mode == 0 and cs.ConvolutionParameter().bias_term
