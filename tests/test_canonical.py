"""Canonical weights: strict checks, safetensors round trip, interop with the real library."""

import json
import pickle
import struct

import numpy as np
import pytest

from ports import formats
from ports.errors import WeightsError
from ports.formats.canonical import Weights, check
from ports.seeded import normal, seeded_weights, uniform
from ports.spec import Variant


@pytest.fixture(scope="module")
def w11():
    return seeded_weights(Variant("1_1"))


def test_seeded_weights_are_deterministic_and_he_scaled(w11):
    again = seeded_weights(Variant("1_1"))
    assert all(np.array_equal(w11[k], again[k]) for k in w11.tensors)
    conv = w11["fire9.expand3x3.weight"]  # fan_in = 64 * 9
    assert abs(conv.std() - np.sqrt(2 / 576)) < 0.02 * np.sqrt(2 / 576)
    assert abs(conv.mean()) < 0.01 * conv.std() * 10
    b = w11["conv10.bias"]
    assert b.min() >= 0.01 and b.max() <= 0.05
    other = seeded_weights(Variant("1_1"), seed=1)
    assert not np.array_equal(other["conv1.weight"], w11["conv1.weight"])


def test_generator_is_pinned_to_known_bits():
    # SplitMix64 with gamma 0x9E3779B97F4A7C15 from state 0: the first output is the
    # reference value 0xE220A8397B1DCDAF of the published algorithm.
    first = int(uniform(0, 1)[0] * 2**53)
    assert first == 0xE220A8397B1DCDAF >> 11
    z = normal(123, 100_000)
    assert abs(z.mean()) < 0.02 and abs(z.var() - 1) < 0.02 and np.abs(z).max() <= 6


def test_normals_in_blocks_are_the_sums_of_twelve_uniforms_in_order():
    """``normal`` works through its stream in blocks (``_ROWS`` values) to stay in cache:
    across block edges, value ``i`` is still uniforms ``12 i + 1 .. 12 i + 12`` of the stream,
    summed in that order (computed here all at once)."""
    from ports import seeded

    n = 2 * seeded._ROWS + 5
    u = uniform(77, 12 * n).reshape(n, 12)
    expected = u[:, 0].copy()
    for j in range(1, 12):
        expected += u[:, j]
    assert normal(77, n).tobytes() == (expected - 6.0).tobytes()


def test_checked_weights_cannot_be_changed(w11):
    """Weights are checked once, when built, and cannot change afterwards: not an array's
    values, not the mappings, not the attributes; nor through the arrays they were built
    from (they keep their own copies).  A pickled copy is the same checked Weights."""
    source = {k: np.array(v) for k, v in w11.tensors.items()}
    w = Weights(source, dict(w11.meta))
    source["conv1.weight"][:] = 0.0  # the caller's arrays: not the Weights'
    assert np.array_equal(w["conv1.weight"], w11["conv1.weight"])
    with pytest.raises(ValueError, match="read-only"):
        w.tensors["conv1.weight"][0, 0, 0, 0] = 1.0
    for change in (lambda: w.tensors.__setitem__("conv1.weight", source["conv1.weight"]),
                   lambda: w.tensors.pop("conv1.bias"), lambda: w.tensors.clear(),
                   lambda: w.meta.update(num_classes="10"),
                   lambda: w.meta.__delitem__("source"),
                   lambda: w.meta.setdefault("x", "y")):
        with pytest.raises(TypeError, match="cannot be changed"):
            change()
    for attribute in ("tensors", "meta"):
        with pytest.raises(AttributeError, match="cannot be changed"):
            setattr(w, attribute, {})
    assert np.array_equal(w["conv1.weight"], w11["conv1.weight"]) and w.meta == w11.meta
    back = pickle.loads(pickle.dumps(w))
    assert back.meta == w.meta and not back["conv1.weight"].flags.writeable
    assert dict(w.meta) | {"source": "x"} and json.dumps(w.meta)  # copies still work
    again = seeded_weights(Variant("1_1"))  # the seeded cache is untouched
    assert np.array_equal(again["conv1.weight"], w11["conv1.weight"])


def test_safetensors_round_trip_is_bit_exact(tmp_path, w11):
    path = tmp_path / "w.safetensors"
    formats.write(w11, path)
    back = formats.read(path)
    assert back.meta == w11.meta
    assert list(back.tensors) == list(Variant("1_1").params())
    assert all(np.array_equal(back[k], w11[k]) for k in w11.tensors)


def test_files_written_by_the_safetensors_library_load_and_ours_load_there(tmp_path, w11):
    import safetensors.numpy as st
    theirs = tmp_path / "theirs.safetensors"
    st.save_file(dict(w11.tensors), str(theirs), metadata=w11.meta)
    back = formats.read(theirs)
    assert all(np.array_equal(back[k], w11[k]) for k in w11.tensors)
    ours = tmp_path / "ours.safetensors"
    formats.write(w11, ours)
    loaded = st.load_file(str(ours))
    assert all(np.array_equal(loaded[k], w11[k]) for k in w11.tensors)


def test_missing_unexpected_and_misshaped_tensors_are_all_listed(w11):
    tensors = dict(w11.tensors)
    del tensors["fire3.squeeze.bias"]
    tensors["fire3.extra.weight"] = np.zeros(3, np.float32)
    tensors["conv1.weight"] = np.zeros((96, 3, 7, 7), np.float32)
    with pytest.raises(WeightsError) as e:
        check(Weights(tensors, dict(w11.meta)))
    msg = str(e.value)
    assert "missing tensors: fire3.squeeze.bias" in msg
    assert "unexpected tensors: fire3.extra.weight" in msg
    assert "conv1.weight: expected shape [64, 3, 3, 3], got [96, 3, 7, 7]" in msg


def test_wrong_variant_names_the_tensor_and_both_shapes(tmp_path):
    path = tmp_path / "v10.safetensors"
    formats.write(seeded_weights(Variant("1_0")), path)
    with pytest.raises(WeightsError) as e:
        formats.read(path, variant=Variant("1_1"))
    msg = str(e.value)
    assert str(path) in msg and "variant 1_0-p0-none (from metadata), expected 1_1-p0-none" in msg
    assert "conv1.weight: expected shape [64, 3, 3, 3], got [96, 3, 7, 7]" in msg


def test_a_file_with_a_missing_tensor_is_refused_naming_it(tmp_path, w11):
    tensors = {k: v for k, v in w11.tensors.items() if k != "conv10.bias"}
    path = tmp_path / "short.safetensors"
    # formats.write() refuses incomplete weights, so build the file by hand
    header, chunks, off = {"__metadata__": w11.meta}, [], 0
    for k, v in tensors.items():
        b = v.tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))
    with pytest.raises(WeightsError, match="missing tensors: conv10.bias"):
        formats.read(path)


def test_metadata_must_be_complete(w11):
    meta = {k: v for k, v in w11.meta.items() if k != "preprocessing"}
    with pytest.raises(WeightsError, match="metadata lacks preprocessing"):
        check(Weights(dict(w11.tensors), meta))


def test_non_finite_and_wrong_dtype_are_refused(w11):
    tensors = dict(w11.tensors)
    bad = tensors["conv10.bias"].copy()
    bad[3] = np.nan
    tensors["conv10.bias"] = bad
    with pytest.raises(WeightsError, match="conv10.bias: 1 non-finite"):
        check(Weights(tensors, dict(w11.meta)))
    tensors["conv10.bias"] = w11["conv10.bias"].astype(np.float64)
    with pytest.raises(WeightsError, match="conv10.bias: expected dtype float32"):
        check(Weights(tensors, dict(w11.meta)))


def test_unknown_extension_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="cannot tell the format"):
        formats.read(tmp_path / "w.bin")


# --- the vocabulary every codec shares ------------------------------------------------------
def test_infer_variant_from_shapes_in_either_layout():
    from ports.formats.canonical import infer_variant, version_of

    assert infer_variant((96, 3, 7, 7), (10, 512, 1, 1)) == Variant("1_0", 10)
    assert infer_variant((3, 3, 3, 64), (1, 1, 512, 7), layout="HWIO", bypass="complex",
                         final_conv_padding=1) == Variant("1_1", 7, 1, "complex")
    assert version_of((64, 3, 3, 3)) == "1_1"
    with pytest.raises(WeightsError, match=r"from conv1 weight w1: weight shape \[32, 3, 3, 3\], "
                       r"expected \[96, 3, 7, 7\] \(1_0\) or \[64, 3, 3, 3\] \(1_1\)"):
        infer_variant((32, 3, 3, 3), (10, 512, 1, 1), names=("w1", "w10"))
    with pytest.raises(WeightsError, match=r"\[5, 5, 3, 64\] \(HWIO\), expected \[7, 7, 3, 96\]"):
        version_of((5, 5, 3, 64), layout="HWIO")
    with pytest.raises(WeightsError, match="no w1 .conv1 weight"):
        infer_variant(None, (10, 512, 1, 1), names=("w1", "w10"))
    with pytest.raises(WeightsError, match=r"no 4-D w10 \(conv10 weight\) has shape \[10\]"):
        infer_variant((96, 3, 7, 7), (10,), names=("w1", "w10"))
    with pytest.raises(WeightsError, match="w10: num_classes") as info:
        infer_variant((96, 3, 7, 7), (0, 512, 1, 1), names=("w1", "w10"))
    assert info.value.path is None and info.value.format is None  # ports.formats.read adds them


def test_key_problems_names_missing_unexpected_and_misshaped_keys():
    from ports.formats.canonical import key_problems

    expected = {"a": (1, 2), "b": (3,), "c": (4,)}
    found = {"a": (2, 1), "c": (4,), "z": (9,), "y": (8,)}
    assert key_problems(found, expected) == [
        "missing keys: b", "unexpected keys: y, z", "a: expected shape [1, 2], got [2, 1]"]
    assert key_problems(list(found), list(expected), noun=("layer", "layers"), colon=False) \
        == ["missing layer b", "unexpected layers y, z"]
    assert key_problems(found, expected, noun="", label=str.upper,
                        note=lambda k: " (HWIO)") == [
        "missing B", "unexpected Y, Z", "A: expected shape [1, 2] (HWIO), got [2, 1]"]
    many = [f"k{i:02}" for i in range(25)]
    assert key_problems(many, [])[0] == ("unexpected keys: " + ", ".join(many[:20])
                                         + " and 5 more")
    assert key_problems(found, found) == []


def test_string_meta_and_meta_variant():
    from ports.formats.canonical import meta_variant, string_meta

    assert string_meta('{"a": "b"}', "m") == {"a": "b"} == string_meta(b'{"a": "b"}', "m")
    assert string_meta({"a": "b"}, "m") == {"a": "b"}
    for bad, why in ([{"a": 1}, "m must map strings to strings"],
                     ['["a"]', "m must map strings to strings"],
                     ["{not json", "m is not valid JSON"], [b"\xff", "m is not UTF-8"],
                     ["[" * 100_000, "m is not valid JSON"], [3, "must map strings"]):
        with pytest.raises(WeightsError, match=why):
            string_meta(bad, "m")
    with pytest.raises(WeightsError, match="longer than 10 characters"):
        string_meta('{"a": "bbbbbbbbbb"}', "m", limit=10)
    assert meta_variant(Variant("1_0", 10).to_meta()) == Variant("1_0", 10)
    with pytest.raises(WeightsError, match="extra/x.json: metadata lacks the architecture"):
        meta_variant({}, what="extra/x.json")


def test_widen_bfloat16_is_exact():
    from ports.formats.canonical import widen_bfloat16

    values = np.array([1.0, -2.5, 0.0, np.inf, 3.140625], np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    out = widen_bfloat16(bits)
    assert out.dtype == np.float32 and np.array_equal(out, values)


# --- the registry ---------------------------------------------------------------------------
def test_the_registry_is_the_one_source_of_names_endings_outputs_and_read_options(tmp_path):
    from ports.formats import manifest as weights

    assert weights.FORMATS == tuple(formats.FORMATS)
    caffe = formats.FORMATS["caffe"]
    assert caffe[0] == caffe.module == "caffe" and caffe[1][0] == ".caffemodel"  # old shape
    assert formats.outputs(tmp_path / "w.caffemodel") == [tmp_path / "w.caffemodel",
                                                          tmp_path / "w.prototxt"]
    assert formats.outputs(tmp_path / "w.bin", "torch") == [tmp_path / "w.bin"]
    for name in formats.FORMATS:
        assert formats.codec(name).NAME == name
        assert not hasattr(formats.codec(name), "EXTENSIONS")  # endings: the registry's alone
    from ports.formats import caffe as caffe_codec
    from ports.formats import mxnet_export

    # the files a codec writes beside its own are the registry's outputs
    assert formats.outputs(tmp_path / "w.caffemodel")[1] == \
        caffe_codec.prototxt_path(tmp_path / "w.caffemodel")
    for name in ("m", "m-symbol.json", "m-0000.params"):
        assert formats.outputs(tmp_path / name, "mxnet-export") == \
            list(mxnet_export.paths(tmp_path / name))
    options = formats.read_options()
    assert options["prototxt"][1] == ["caffe"] and options["preprocessing"][1] == ["mxnet"]
    path = tmp_path / "w.safetensors"
    formats.write(seeded_weights(Variant("1_1")), path)
    with pytest.raises(ValueError, match="format safetensors takes no read option prototxt"):
        formats.read(path, prototxt="x.prototxt")
