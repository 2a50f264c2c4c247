"""The LiteRT / TFLite codec without any runtime: round trips of every variant, the written
graph against the spec, the ceil-mode pooling claim, import of foreign namings, and refusal
of corrupt, hostile or mis-shaped files.  (The written models run in LiteRT's interpreter in
the LiteRT engine's conformance test.)"""

from __future__ import annotations

import json
import math
import struct

import flatbuffers  # noqa: F401  (the writer's library: the core environment installs it)
import numpy as np
import pytest

from ports import formats
from ports import spec as S
from ports.errors import WeightsError
from ports.formats import tflite as tf
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants


def _same(a, b) -> bool:
    return set(a.tensors) == set(b.tensors) and \
        all(a[k].tobytes() == b[k].tobytes() for k in b.tensors)


def _weights(vid="1_1-p0-none-c10"):
    return seeded_weights(Variant.from_id(vid))


def _bytes(g, meta=None, description="") -> bytes:
    return tf.serialize(g, meta, description)


def _ops(blob: bytes) -> list[str]:
    m = tf._Model(blob)
    return [m.op_name(op) for op in m.ops]


# --- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("vid", [v.id for v in all_variants()] + ["1_0-p1-complex-c10",
                                                                    "1_1-p0-simple-c1"])
def test_write_read_round_trip_is_bit_exact(vid, tmp_path):
    w = seeded_weights(Variant.from_id(vid))
    path = tmp_path / "m.tflite"
    assert formats.write(w, path) == [path]
    back = formats.read(path)
    assert back.variant == w.variant and dict(back.meta) == dict(w.meta) and _same(back, w)
    assert formats.read(path, variant=w.variant).variant == w.variant


def test_bytes_are_deterministic(tmp_path):
    w = _weights("1_0-p1-complex-c10")
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    formats.write(w, a)
    formats.write(seeded_weights(w.variant), b)
    assert a.read_bytes() == b.read_bytes() == tf.encode(w)


# --- the written graph -------------------------------------------------------------------------
def _expected_ops(v: Variant) -> list[str]:
    """The operator sequence the module docstring promises, from the spec."""
    out: list[str] = []
    for layer in v.layers():
        if isinstance(layer, S.Conv):
            out += (["PAD"] if layer.padding else []) + ["CONV_2D"]
        elif isinstance(layer, S.MaxPool):
            out += ["PADV2", "MAX_POOL_2D"]
        elif isinstance(layer, S.Fire):
            out += ["CONV_2D"] * 3 + ["CONCATENATION"]
            out += {None: [], "identity": ["ADD"], "conv": ["CONV_2D", "ADD"]}[layer.bypass]
        elif isinstance(layer, S.GlobalAvgPool):
            out.append("MEAN")
    return out


@pytest.mark.parametrize("vid", [v.id for v in all_variants(10)])
def test_the_graph_is_the_spec(vid):
    w = _weights(vid)
    v = w.variant
    blob = tf.encode(w)
    assert blob[4:8] == b"TFL3"
    m = tf._Model(blob)
    assert _ops(blob) == _expected_ops(v)
    names = [t["name"] for t in m.tensors]
    assert m.buffer(0, "sentinel") is None and m.tensors[0]["buffer"] == 0
    # input and output
    (inp,) = m.inputs
    size = 224  # the seeded weights' preprocessing is torchvision
    assert names[inp] == tf.INPUT and m.tensors[inp]["shape"] == [1, size, size, 3]
    assert names[m.ops[-1]["outputs"][0]] == tf.OUTPUT
    assert m.tensors[m.ops[-1]["outputs"][0]]["shape"] == [1, v.num_classes]
    # every conv: OHWI filter under its canonical name, geometry, fused activation
    convs = [op for op in m.ops if op["code"] == tf.CONV_2D]
    for c, op in zip(v.convs(), convs):
        assert names[op["inputs"][1]] == f"{c.name}.weight"
        assert m.tensors[op["inputs"][1]]["shape"] == [c.out_channels, c.kernel, c.kernel,
                                                       c.in_channels]
        o = m.options(op, tf.CONV_2D_OPTIONS_TYPE, tf.CONV_2D_OPTIONS, c.name)
        assert (o["stride_h"], o["stride_w"]) == (c.stride, c.stride)
        assert o["padding"] == (tf.SAME if c.kernel == 3 and c.padding else tf.VALID)
        assert o["fused_activation_function"] == (tf.NONE if c.name.endswith(".bypass")
                                                  else tf.RELU_ACT)
        np.testing.assert_array_equal(
            m.array(op["inputs"][1], c.name), w[f"{c.name}.weight"].transpose(0, 2, 3, 1))
    # pools: PADV2 of one bottom/right row and column of -inf, then 3x3/2 VALID
    for op in m.ops:
        if op["code"] == tf.PADV2:
            assert m.array(op["inputs"][1], "p", (tf.INT32,)).tolist() == \
                [[0, 0], [0, 1], [0, 1], [0, 0]]
            assert m.array(op["inputs"][2], "v").item() == -np.inf
        elif op["code"] == tf.MAX_POOL_2D:
            t = op["options"]
            f = tf.POOL_2D_OPTIONS
            assert [t.scalar(f[k], "i", 0, k) for k in ("stride_w", "stride_h", "filter_width",
                                                        "filter_height")] == [2, 2, 3, 3]
            assert t.scalar(f["padding"], "b", 0, "padding") == tf.VALID
        elif op["code"] == tf.PAD:
            assert m.array(op["inputs"][1], "p", (tf.INT32,)).tolist() == \
                [[0, 0], [1, 1], [1, 1], [0, 0]]
        elif op["code"] == tf.CONCATENATION:
            assert op["options"].scalar(0, "i", 0, "axis") == 3
            first = m.producer[op["inputs"][0]]
            assert names[first["inputs"][1]].endswith(".expand1x1.weight")
        elif op["code"] == tf.MEAN:
            assert m.array(op["inputs"][1], "axes", (tf.INT32,)).tolist() == [1, 2]
            assert op["options"].scalar(0, "?", True, "keep_dims") is False
    # metadata and description
    data = m.buffer(m.metadata[tf.METADATA], "metadata")
    assert json.loads(data) == dict(w.meta)
    assert m.description == f"SqueezeNet {v.id}: {w.meta['source']}"
    # the activation table names tensors that exist, for every activation the spec names
    table = tf.activation_tensors(v)
    assert list(table) == v.activation_names()
    assert set(table.values()) <= set(names)


def test_caffe_weights_default_to_227():
    w = _weights("1_0-p1-none-c10")
    w = type(w)(dict(w.tensors), {**w.meta, "preprocessing": "caffe"})
    m = tf._Model(tf.encode(w))
    assert m.tensors[next(iter(m.inputs))]["shape"] == [1, 227, 227, 3]


def _ceil_pool(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """Caffe's max pool along axis 0: ceil-mode windows, clipped at the end."""
    n = S.MaxPool("p", k, s).out_size(len(x))
    return np.array([x[i * s:min(i * s + k, len(x))].max() for i in range(n)])


def _padded_floor_pool(x: np.ndarray, k: int = 3, s: int = 2) -> np.ndarray:
    """What the graph computes: one -inf appended, then floor-mode (VALID) windows."""
    x = np.concatenate([x, [-np.inf]])
    n = (len(x) - k) // s + 1
    return np.array([x[i * s:i * s + k].max() for i in range(n)])


def test_one_row_of_padding_makes_a_valid_pool_ceil_mode_at_every_size():
    """ceil((H - 3) / 2) == floor((H - 2) / 2) for every H >= 3, and the windows agree."""
    pool = S.MaxPool("p")
    for h in range(3, 2000):
        assert math.ceil((h - 3) / 2) == (h - 2) // 2
        assert pool.out_size(h) == (h + 1 - 3) // 2 + 1
    rng = np.random.default_rng(0)
    for h in range(3, 80):
        x = rng.standard_normal(h) - 3  # negative values: a padded cell must never win
        np.testing.assert_array_equal(_padded_floor_pool(x), _ceil_pool(x))


# --- import of files not written here ----------------------------------------------------------
def test_foreign_names_and_no_metadata_read_from_the_graph():
    w = _weights("1_0-p1-simple-c10")
    g = tf.graph(w)
    for i, t in enumerate(g.tensors):
        t["name"] = f"model/tensor_{len(g.tensors) - i}"
    back = tf.decode(_bytes(g, None, "converted by someone"), path="x.tflite")
    assert back.variant == w.variant and _same(back, w)
    assert back.meta["preprocessing"] == "torchvision"
    assert back.meta["source"] == "TFLite x.tflite (converted by someone)"


def test_float16_filters_behind_dequantize_are_read():
    w = _weights("1_1-p0-complex-c10")
    g = tf.graph(w)
    ops = []
    for t in list(g.tensors):
        if t["name"].endswith(".weight"):
            half = np.frombuffer(t["data"], "<f4").astype(np.float16).reshape(t["shape"])
            src = g.constant(t["name"] + ".fp16", half)
            t["data"] = None
            ops.append((tf.DEQUANTIZE, [g.index[src]], [g.index[t["name"]]], 0, []))
    g.ops[:0] = ops
    back = tf.decode(_bytes(g, w.meta))
    assert back.variant == w.variant
    for k in w.tensors:
        want = w[k].astype(np.float16).astype(np.float32) if k.endswith(".weight") else w[k]
        np.testing.assert_array_equal(back[k], want)


def test_shuffled_convs_inside_a_fire_still_match_by_shape():
    w = _weights("1_0-p0-complex-c10")
    g = tf.graph(w)
    # put each fire's bypass conv first: still the same group, matched by shape
    bypass = [i for i, op in enumerate(g.ops) if op[0] == tf.CONV_2D
              and g.tensors[op[1][1]]["name"].endswith(".bypass.weight")]
    for i in bypass:
        op = g.ops.pop(i)
        j = next(k for k in range(i - 1, -1, -1) if g.ops[k][0] == tf.CONV_2D and
                 g.tensors[g.ops[k][1][1]]["name"].endswith(".squeeze.weight"))
        g.ops.insert(j, op)
    back = tf.decode(_bytes(g, w.meta))
    assert back.variant == w.variant and _same(back, w)


# --- refusals ----------------------------------------------------------------------------------
def _refused(blob: bytes, match: str, **kw):
    with pytest.raises(WeightsError, match=match):
        tf.decode(blob, **kw)


def test_truncated_files_are_refused(tmp_path):
    blob = tf.encode(_weights())
    _refused(blob[:-1], "beyond the")
    _refused(blob[: len(blob) // 2], "beyond the")
    _refused(blob[:7], "too short")
    path = tmp_path / "t.tflite"
    path.write_bytes(blob[:-100])
    with pytest.raises(WeightsError, match=rf"{path} \(tflite\): .*beyond the"):
        formats.read(path)


def test_a_vector_length_beyond_the_file_is_refused():
    w = _weights()
    blob = bytearray(tf.encode(w))
    data = w["conv1.weight"].transpose(0, 2, 3, 1).astype("<f4").tobytes()
    at = bytes(blob).find(data)
    assert at > 0 and struct.unpack_from("<I", blob, at - 4)[0] == len(data)
    struct.pack_into("<I", blob, at - 4, len(blob))
    _refused(bytes(blob), r"conv1\.weight.*beyond the \d+-byte file")
    struct.pack_into("<I", blob, at - 4, 2**32 - 1)
    _refused(bytes(blob), "more than the")


def test_a_wrong_file_identifier_is_refused():
    blob = bytearray(tf.encode(_weights()))
    blob[4:8] = b"TFL2"
    _refused(bytes(blob), "file identifier is b'TFL2', expected b'TFL3'")
    _refused(b"PK\x03\x04" + bytes(100), "file identifier")


def test_a_file_over_max_bytes_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.tflite"
    formats.write(_weights(), path)
    monkeypatch.setattr(tf, "MAX_BYTES", 1000)
    with pytest.raises(WeightsError, match=r"more than the 1000 allowed"):
        formats.read(path)
    _refused(path.read_bytes(), "more than the 1000 allowed")


def _replace(g, name: str, array: np.ndarray) -> None:
    t = g.tensors[g.index[name]]
    t["shape"], t["data"] = list(array.shape), np.ascontiguousarray(array, "<f4").tobytes()


def test_conv_weights_of_the_wrong_shape_are_refused():
    w = _weights()
    g = tf.graph(w)
    bad = w["fire5.expand3x3.weight"].transpose(0, 2, 3, 1)[:, :, :, :16]
    _replace(g, "fire5.expand3x3.weight", bad)
    _refused(_bytes(g, w.meta), r"fire5\.expand3x3: expected one CONV_2D with filter "
                                r"\(OHWI\) \[128, 3, 3, 32\]")
    g = tf.graph(w)
    _replace(g, "conv1.weight", w["conv1.weight"].transpose(0, 2, 3, 1)[:32])
    _refused(_bytes(g, w.meta), "cannot infer the variant from conv1 weight")
    g = tf.graph(w)
    _replace(g, "fire2.squeeze.bias", w["fire2.squeeze.bias"][:8])
    _refused(_bytes(g, w.meta), r"fire2\.squeeze: bias shape \[8\], expected \[16\]")


def test_a_buffer_that_does_not_fit_its_shape_is_refused():
    w = _weights()
    g = tf.graph(w)
    t = g.tensors[g.index["conv10.weight"]]
    t["data"] = t["data"][:-4]
    _refused(_bytes(g, w.meta), r"'conv10\.weight': shape \[10, 1, 1, 512\] FLOAT32 needs "
                                r"20480 bytes, its buffer holds 20476")


def test_swapped_concat_is_refused():
    w = _weights()
    g = tf.graph(w)
    i = next(i for i, op in enumerate(g.ops) if op[0] == tf.CONCATENATION)
    code, inputs, outputs, kind, options = g.ops[i]
    g.ops[i] = (code, inputs[::-1], outputs, kind, options)
    _refused(_bytes(g, w.meta), "fire2: the graph concatenates expand3x3 before expand1x1")


def test_metadata_naming_another_variant_is_refused():
    w = _weights()
    blob = tf.serialize(tf.graph(w), {**w.meta, "bypass": "simple"}, "")
    _refused(blob, r"names SqueezeNet 1_1-p0-simple-c10, but the graph is 1_1-p0-none-c10")
    _refused(tf.serialize(tf.graph(w), {**w.meta, "num_classes": "ten"}, ""),
             "metadata 'squeezenet_ports'")


def test_the_requested_variant_must_be_the_graphs():
    blob = tf.encode(_weights())
    _refused(blob, "not the requested 1_0-p0-none", variant=Variant("1_0"))


def test_hostile_structure_is_refused():
    w = _weights()
    blob = tf.encode(w)
    root = struct.unpack_from("<I", blob, 0)[0]
    # the root table's vtable pointing before the file
    bad = bytearray(blob)
    struct.pack_into("<i", bad, root, root + 100)
    _refused(bytes(bad), "Model vtable.*beyond the")
    # the root offset pointing past the end
    bad = bytearray(blob)
    struct.pack_into("<I", bad, 0, len(blob) + 8)
    _refused(bytes(bad), "root table offset.*beyond the")
    # an operator naming a tensor that does not exist
    g = tf.graph(w)
    code, inputs, outputs, kind, options = g.ops[0]
    g.ops[0] = (code, [inputs[0], 10_000, inputs[2]], outputs, kind, options)
    _refused(_bytes(g, w.meta), r"operator 0 \(CONV_2D\) names tensor 10000")
    # a filter that is not a constant
    g = tf.graph(w)
    g.tensors[g.index["conv1.weight"]]["data"] = None
    _refused(_bytes(g, w.meta), r"'conv1\.weight' is not a constant")


def test_more_operators_than_allowed_are_refused(monkeypatch):
    blob = tf.encode(_weights())
    monkeypatch.setattr(tf, "MAX_OPERATORS", 10)
    _refused(blob, "operators has .* entries, more than the 10 allowed")


def test_random_damage_ends_in_weights_or_a_weights_error():
    """Every byte of the structure overwritten in turn (the constants' data left alone)."""
    w = _weights()
    blob = tf.encode(w)
    data = {t["name"]: t["data"] for t in tf.graph(w).tensors if t["data"]}
    rng = np.random.default_rng(1)
    heavy = [bytes(blob).find(d) for d in data.values() if len(d) > 64]
    spans = sorted((s, s + len(d)) for s, d in zip(heavy, [d for d in data.values()
                                                           if len(d) > 64]))
    structural = [i for i in range(len(blob)) if not any(a <= i < b for a, b in spans)]
    for i in rng.choice(structural, size=min(400, len(structural)), replace=False):
        bad = bytearray(blob)
        bad[i] ^= int(rng.integers(1, 256))
        try:
            tf.decode(bytes(bad))
        except WeightsError:
            pass
