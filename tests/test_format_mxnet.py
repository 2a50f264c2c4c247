"""The MXNet ``.params`` codec without MXNet: layout against real MXNet 1.9.1 bytes, round
trips, variant inference, exported (``arg:``) names, and refusal of truncated or foreign
files before any large allocation.  (Loading in real MXNet: conformance/test_mxnet.py.)"""

from __future__ import annotations

import os
import struct
import tempfile

import numpy as np
import pytest

from ports.errors import WeightsError
from ports.formats import detect, read, write
from ports.formats import mxnet as codec
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

# Written by MXNet 1.9.1: mx.nd.save(f, {"a": mx.nd.array([[1, 2, 3]]),
#                                        "b.c": mx.nd.array([1.5], dtype="float64")})
REAL_DICT = bytes.fromhex(
    "120100000000000000000000000000000200000000000000c9fa93f900000000020000000100000000"
    "00000003000000000000000100000000000000000000000000803f0000004000004040c9fa93f90000"
    "0000010000000100000000000000010000000000000001000000000000000000f83f02000000000000"
    "000100000000000000610300000000000000622e63")
# mx.nd.save(f, [mx.nd.array([1, 2])]): a list without names
REAL_LIST = bytes.fromhex(
    "120100000000000000000000000000000100000000000000c9fa93f900000000010000000200000000"
    "0000000100000000000000000000000000803f000000400000000000000000")
# Under np-shape semantics (npx.set_np(); npx.save(f, {"w": np.array([[0.5, -2.0]]),
# "s": np.array(3.0, dtype="float16")})): version 3 magic, a 0-d float16 scalar.
REAL_V3 = bytes.fromhex(
    "120100000000000000000000000000000200000000000000cafa93f9000000000200000001000000000000"
    "0002000000000000000100000000000000000000000000003f000000c0cafa93f900000000000000000100"
    "0000000000000200000000420200000000000000010000000000000077010000000000000073")


def _fail(blob: bytes, match: str | None) -> WeightsError:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "x.params")
        with open(path, "wb") as f:
            f.write(blob)
        with pytest.raises(WeightsError, match=match) as info:
            read(path)
    assert info.value.format == "mxnet" and info.value.path == path
    return info.value


# --- the byte layout, against real MXNet output ---------------------------------------------
def test_real_mxnet_dict_file_decodes_and_reencodes_byte_identical():
    arrays = codec.decode_ndarrays(REAL_DICT)
    assert list(arrays) == ["a", "b.c"]
    assert arrays["a"].dtype == np.float32 and arrays["a"].tolist() == [[1, 2, 3]]
    assert arrays["b.c"].dtype == np.float64 and arrays["b.c"].tolist() == [1.5]
    assert codec.encode_ndarrays(arrays) == REAL_DICT


def test_real_mxnet_v3_file_decodes():
    arrays = codec.decode_ndarrays(REAL_V3)
    assert arrays["w"].tolist() == [[0.5, -2.0]]
    assert arrays["s"].shape == () and arrays["s"].dtype == np.float16 and arrays["s"] == 3


def test_unnamed_list_is_refused():
    _fail(REAL_LIST, "without names")


def test_header_and_first_array_layout():
    weights = seeded_weights(Variant("1_1"))
    blob = codec.encode(weights)
    assert struct.unpack_from("<QQQ", blob) == (0x112, 0, 52)
    magic, stype, ndim = struct.unpack_from("<Iii", blob, 24)
    assert (magic, stype, ndim) == (0xF993FAC9, 0, 4)
    assert struct.unpack_from("<4qiii", blob, 36) == (64, 3, 3, 3, 1, 0, 0)
    data = np.frombuffer(blob, "<f4", 64 * 27, 36 + 32 + 12)
    assert np.array_equal(data, weights.tensors["conv1.weight"].ravel())
    assert blob.endswith(struct.pack("<Q", 13) + b"output.0.bias")


def test_older_layouts_are_read():
    w = np.arange(6, dtype="<f4").reshape(2, 3)
    head = struct.pack("<QQQ", 0x112, 0, 1)
    names = struct.pack("<QQ", 1, 1) + b"w"
    v1 = struct.pack("<Ii2qiii", 0xF993FAC8, 2, 2, 3, 1, 0, 0) + w.tobytes()
    legacy = struct.pack("<I2Iiii", 2, 2, 3, 1, 0, 0) + w.tobytes()
    for body in (v1, legacy):
        assert np.array_equal(codec.decode_ndarrays(head + body + names)["w"], w)


# --- key table and round trips -------------------------------------------------------------
def test_key_table_matches_the_gluon_zoo_names():
    t10, t11 = codec.key_table(Variant("1_0")), codec.key_table(Variant("1_1"))
    assert t10["conv1.weight"] == t11["conv1.weight"] == "features.0.weight"
    assert t10["fire2.squeeze.weight"] == "features.3.0.0.weight"
    assert t10["fire2.expand1x1.bias"] == "features.3.1.0.0.bias"
    assert t10["fire9.expand3x3.weight"] == "features.12.1.1.0.weight"
    assert t11["fire4.expand3x3.bias"] == "features.6.1.1.0.bias"
    assert t10["conv10.weight"] == t11["conv10.weight"] == "output.0.weight"
    complex_ = codec.key_table(Variant("1_1", bypass="complex"))
    assert complex_["fire2.bypass.weight"] == "features.3.bypass.weight"
    for v in all_variants():
        table = codec.key_table(v)
        assert list(table) == list(v.params()) and len(set(table.values())) == len(table)


@pytest.mark.parametrize("variant", all_variants() + [Variant("1_0", 10)], ids=lambda v: v.id)
def test_round_trip(variant, tmp_path):
    weights = seeded_weights(variant)
    path = tmp_path / "w.params"
    assert detect(path) == "mxnet"
    write(weights, path)
    back = read(path, variant=variant)
    assert back.variant == variant and back.meta["preprocessing"] == "torchvision"
    assert all(np.array_equal(back.tensors[k], weights.tensors[k]) for k in weights.tensors)
    assert codec.encode(back) == path.read_bytes()
    # without variant=: what the shapes tell (simple looks like none; padding is 0)
    inferred = read(path).variant
    expected = Variant(variant.version, variant.num_classes, 0,
                       "complex" if variant.bypass == "complex" else "none")
    assert inferred == expected


def test_wider_and_narrower_floats_read_as_float32():
    weights = seeded_weights(Variant("1_1"))
    table = codec.key_table(weights.variant)
    for dtype in ("<f8", "<f2"):
        arrays = {table[k]: v.astype(dtype) for k, v in weights.tensors.items()}
        back = codec.decode(codec.encode_ndarrays(arrays))
        for k, v in weights.tensors.items():
            assert back.tensors[k].dtype == np.float32
            assert np.array_equal(back.tensors[k], v.astype(dtype).astype(np.float32))


def _exported(variant: Variant, prefix: str = "squeezenet0_") -> dict[str, np.ndarray]:
    weights = seeded_weights(variant)
    out = {}
    for i, conv in enumerate(variant.convs()):
        for p in ("weight", "bias"):
            out[f"arg:{prefix}conv{i}_{p}"] = weights.tensors[f"{conv.name}.{p}"]
    return out


@pytest.mark.parametrize("variant", [Variant("1_0"), Variant("1_1", bypass="complex")],
                         ids=lambda v: v.id)
def test_exported_symbol_names_are_read(variant):
    back = codec.decode(codec.encode_ndarrays(_exported(variant)))
    assert back.variant == variant
    weights = seeded_weights(variant)
    assert all(np.array_equal(back.tensors[k], weights.tensors[k]) for k in weights.tensors)


def test_exported_names_with_a_gap_or_mixed_prefixes_are_refused():
    arrays = _exported(Variant("1_1"))
    arrays.pop("arg:squeezenet0_conv5_weight")
    arrays.pop("arg:squeezenet0_conv5_bias")
    _fail(codec.encode_ndarrays(arrays), "numbered")
    arrays = _exported(Variant("1_1"))
    arrays["arg:other_conv9_weight"] = arrays.pop("arg:squeezenet0_conv9_weight")
    _fail(codec.encode_ndarrays(arrays), "mix prefixes")
    arrays = _exported(Variant("1_1"))
    arrays["plain"] = arrays.pop("arg:squeezenet0_conv9_bias")
    _fail(codec.encode_ndarrays(arrays), "mix")


# --- refusals --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good() -> bytes:
    return codec.encode(seeded_weights(Variant("1_1")))


def test_truncated_files_are_refused(good):
    cuts = list(range(0, 120)) + [1000, len(good) // 2, len(good) - 20, len(good) - 1]
    for cut in cuts:
        err = _fail(good[:cut], None)
        assert any(w in err.reason for w in ("truncated", "too short", "ends inside")), \
            (cut, err.reason)


def test_foreign_files_are_refused(tmp_path):
    _fail(b"PK\x03\x04" + bytes(100), "list magic")  # a zip (torch .pth)
    _fail(struct.pack("<Q", 64) + b'{"__metadata__":{}}' + bytes(60), "list magic")
    _fail(bytes(range(256)) * 4, "list magic")
    path = tmp_path / "foreign.params"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))
    with pytest.raises(WeightsError, match="not an MXNet"):
        read(path)


def _patch(blob: bytes, offset: int, fmt: str, *values) -> bytes:
    out = bytearray(blob)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def test_bad_fields_are_refused(good):
    _fail(_patch(good, 24, "<I", 0xDEADBEEF), "magic 0xDEADBEEF is not an NDArray")
    _fail(_patch(good, 28, "<i", 1), "row_sparse")
    _fail(_patch(good, 28, "<i", 2), "csr")
    _fail(_patch(good, 32, "<i", 1000), "ndim 1000")
    _fail(_patch(good, 32, "<i", -5), "ndim -5")
    _fail(_patch(good, 36, "<q", -3), "absurd shape")
    _fail(_patch(good, 68, "<ii", 99, 0), "bad context")
    _fail(_patch(good, 76, "<i", 4), "floating")          # int32 data
    _fail(_patch(good, 76, "<i", 12), "unsupported type flag 12")
    _fail(_patch(good, 16, "<Q", 1 << 60), "more than")
    _fail(good + b"\0", "unexpected bytes")


def test_absurd_shapes_fail_before_allocating(good):
    # 2^39 x 1 x 1 x 8 float32 would be 16 TiB: refused from the header alone
    _fail(_patch(good, 36, "<4q", 1 << 39, 1, 1, 8), "needs 17592186044416 bytes")
    _fail(_patch(good, 36, "<4q", 1 << 40, 1, 1, 1), "absurd shape")


def test_bad_name_lists_are_refused():
    a = np.zeros((2,), "<f4")
    body = codec.encode_ndarrays({"x": a, "y": a})
    names_at = body.index(struct.pack("<Q", 2) + struct.pack("<Q", 1) + b"x")
    _fail(_patch(body, names_at, "<Q", 1), "1 names for 2 arrays")
    _fail(_patch(body, names_at + 8, "<Q", 1 << 40), "length")
    _fail(body.replace(b"\x01\x00\x00\x00\x00\x00\x00\x00y", b"\x01\x00\x00\x00\x00\x00\x00\x00x"),
          "duplicate names: x")
    _fail(body[:-1] + b"\xff", "not UTF-8")


def test_wrong_names_or_shapes_are_refused(good):
    table = codec.key_table(Variant("1_1"))
    arrays = codec.decode_ndarrays(good)
    torch_like = {k.replace("features.", "feat."): v for k, v in arrays.items()}
    _fail(codec.encode_ndarrays(torch_like), "cannot find conv1")
    extra = dict(arrays, **{"features.3.extra.weight": np.zeros((1,), "<f4")})
    _fail(codec.encode_ndarrays(extra), "unexpected features.3.extra.weight")
    missing = {k: v for k, v in arrays.items() if k != table["fire5.squeeze.bias"]}
    _fail(codec.encode_ndarrays(missing), "missing features.7.0.0.bias")
    wrong = dict(arrays, **{"features.0.weight": np.zeros((64, 3, 5, 5), "<f4")})
    _fail(codec.encode_ndarrays(wrong), r"conv1 weight .* shape \[64, 3, 5, 5\]")


def test_shape_mismatch_is_reported_by_the_generic_reader(tmp_path, good):
    arrays = codec.decode_ndarrays(good)
    arrays["features.3.0.0.weight"] = np.zeros((16, 96, 1, 1), "<f4")
    path = tmp_path / "bad.params"
    path.write_bytes(codec.encode_ndarrays(arrays))
    with pytest.raises(WeightsError, match=r"fire2.squeeze.weight: expected shape "
                                           r"\[16, 64, 1, 1\], got \[16, 96, 1, 1\]"):
        read(path)


def test_write_does_not_overwrite_when_asked(tmp_path):
    weights = seeded_weights(Variant("1_1"))
    path = tmp_path / "w.params"
    write(weights, path)
    with pytest.raises(FileExistsError):
        write(weights, path, overwrite=False)
