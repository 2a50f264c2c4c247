"""The Chainer ``.npz`` codec without Chainer: key table, round trips, metadata, inference
of the variant from shapes, and refusal of unsafe or malformed files."""

import io
import json
import struct
import zipfile
from functools import cache

import numpy as np
import pytest

from ports import formats
from ports.errors import WeightsError
from ports.formats import chainer as codec
from ports.formats.canonical import Weights
from ports.seeded import seeded_weights as _seeded_weights
from ports.spec import Variant, all_variants


@cache
def seeded_weights(variant: Variant) -> Weights:
    return _seeded_weights(variant)


def _same(a: Weights, b: Weights) -> None:
    assert set(a.tensors) == set(b.tensors)
    for k in a.tensors:
        assert a.tensors[k].dtype == np.float32
        assert a.tensors[k].tobytes() == b.tensors[k].tobytes(), k


def _chainer_like(weights: Weights, **kw) -> dict:
    """What ``chainer.serializers.save_npz`` would write: parameters only."""
    return {v: np.asarray(weights.tensors[k], **kw)
            for k, v in codec.key_table(weights.variant).items()}


def _npz(entries: dict, compressed: bool = True) -> bytes:
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **entries)
    return buf.getvalue()


@pytest.fixture(scope="module")
def w11():
    return seeded_weights(Variant("1_1"))


# --- key table -------------------------------------------------------------------------------
def test_key_table():
    table = codec.key_table(Variant("1_0", bypass="complex"))
    assert table["conv1.weight"] == "conv1/W"
    assert table["conv1.bias"] == "conv1/b"
    assert table["fire2.squeeze.weight"] == "fire2/squeeze/W"
    assert table["fire9.expand3x3.bias"] == "fire9/expand3x3/b"
    assert table["fire2.bypass.weight"] == "fire2/bypass/W"
    assert table["conv10.weight"] == "conv10/W"
    assert len(set(table.values())) == len(table) == 2 * (2 + 8 * 3 + 4)


def test_detected_by_extension():
    assert formats.detect("model.npz") == "chainer"
    assert formats.codec("chainer") is codec


# --- round trips -----------------------------------------------------------------------------
@pytest.mark.parametrize("variant", all_variants() + [Variant("1_0", 10, 1, "simple")],
                         ids=lambda v: v.id)
def test_round_trip(tmp_path, variant):
    weights = seeded_weights(variant)
    path = tmp_path / "w.npz"
    assert formats.write(weights, path) == [path]
    back = formats.read(path)
    _same(back, weights)
    assert back.meta == weights.meta
    assert back.variant == variant


def test_written_file_is_a_plain_npz(tmp_path, w11):
    path = tmp_path / "w.npz"
    codec.write(w11, path)
    with np.load(path, allow_pickle=False) as npz:
        assert set(npz.files) == set(codec.key_table(w11.variant).values()) | {codec.META_KEY}
        assert npz["fire2/squeeze/W"].dtype == np.float32
        np.testing.assert_array_equal(npz["fire2/squeeze/W"], w11["fire2.squeeze.weight"])
        assert json.loads(str(npz[codec.META_KEY])) == w11.meta


def test_encoding_is_reproducible(w11):
    assert codec.encode(w11) == codec.encode(w11)
    stored = codec.encode(w11, compression=False)
    assert len(stored) > len(codec.encode(w11))
    _same(codec.decode(stored), w11)


@pytest.mark.parametrize("compressed", [True, False])
def test_chainer_like_file_infers_variant(compressed):
    """No metadata member: version and classes from the shapes; padding/identity bypass
    are not inferable and come from ``variant=`` (default 0 / none)."""
    for variant in all_variants() + [Variant("1_1", 7)]:
        weights = seeded_weights(variant)
        blob = _npz(_chainer_like(weights), compressed)
        got = codec.decode(blob)
        inferred = Variant(variant.version, variant.num_classes, 0,
                           "complex" if variant.bypass == "complex" else "none")
        assert got.variant == inferred
        assert got.meta["preprocessing"] == "none"
        _same(got, weights)
        assert codec.decode(blob, variant=variant).variant == variant


def test_other_dtypes_and_orders_convert_to_float32(w11):
    entries = _chainer_like(w11)
    entries["conv1/W"] = entries["conv1/W"].astype(np.float64)
    entries["conv1/b"] = entries["conv1/b"].astype(">f4")
    entries["conv10/W"] = np.asfortranarray(entries["conv10/W"])
    entries["fire2/squeeze/b"] = entries["fire2/squeeze/b"].astype(np.float16)
    got = codec.decode(_npz(entries))
    np.testing.assert_array_equal(got["conv1.weight"], w11["conv1.weight"])
    np.testing.assert_array_equal(got["conv1.bias"], w11["conv1.bias"])
    np.testing.assert_array_equal(got["conv10.weight"], w11["conv10.weight"])
    np.testing.assert_array_equal(got["fire2.squeeze.bias"],
                                  w11["fire2.squeeze.bias"].astype(np.float16))
    for t in got.tensors.values():
        assert t.dtype == np.float32 and t.flags.c_contiguous and not t.flags.writeable


def test_wrapper_prefix(w11):
    entries = {"predictor/" + k: v for k, v in _chainer_like(w11).items()}
    entries["optimizer/t"] = np.asarray(3)
    _same(codec.decode(_npz(entries)), w11)


def test_variant_mismatch_is_reported(tmp_path, w11):
    path = tmp_path / "w.npz"
    codec.write(w11, path)
    with pytest.raises(WeightsError, match="1_1-p0-none.*expected 1_1-p1-none"):
        formats.read(path, variant=Variant("1_1", final_conv_padding=1))


# --- refusals ----------------------------------------------------------------------------
class _Payload:
    """Unpickling this would run code (it is never unpickled by the codec)."""

    ran = False

    def __reduce__(self):
        return (_mark, ())


def _mark():
    _Payload.ran = True
    return "pwned"


def test_pickled_object_refused_without_running(w11):
    entries = _chainer_like(w11)
    entries["fire3/expand1x1/W"] = np.array([_Payload()], dtype=object)
    blob = _npz(entries)
    with pytest.raises(WeightsError, match=r"fire3/expand1x1/W.*object.*not unpickled"):
        codec.decode(blob)
    assert not _Payload.ran
    try:  # anywhere in the file, e.g. outside the chain's prefix
        entries = _chainer_like(w11)
        entries["extensions/log"] = np.array(None)
        with pytest.raises(WeightsError, match="extensions/log"):
            codec.decode(_npz(entries))
    finally:
        _Payload.ran = False


def test_error_names_path_and_format(tmp_path):
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip")
    with pytest.raises(WeightsError) as e:
        formats.read(path)
    assert e.value.format == "chainer" and e.value.path == str(path)
    assert "zip" in e.value.reason


def test_missing_and_unexpected_keys_named(w11):
    entries = _chainer_like(w11)
    del entries["fire4/expand3x3/b"]
    entries["fire4/extra/W"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match=r"missing keys: 'fire4/expand3x3/b' "
                       r"\(fire4\.expand3x3\.bias\); unexpected keys: 'fire4/extra/W'"):
        codec.decode(_npz(entries))
    with pytest.raises(WeightsError, match="missing key 'conv1/W'"):
        codec.decode(_npz({"a/W": np.zeros(1, np.float32)}))


def test_wrong_shapes_and_dtypes(w11):
    entries = _chainer_like(w11)
    entries["conv1/W"] = np.zeros((3, 3), np.float32)
    with pytest.raises(WeightsError, match="conv1/W.*shape"):
        codec.decode(_npz(entries))
    entries = _chainer_like(w11)
    entries["fire2/squeeze/W"] = entries["fire2/squeeze/W"].astype(np.int32)
    with pytest.raises(WeightsError, match="fire2/squeeze/W.*dtype"):
        codec.decode(_npz(entries))
    entries = _chainer_like(w11)
    entries["conv10/b"] = entries["conv10/b"][:10]
    with pytest.raises(WeightsError, match=r"'conv10/b' \(conv10\.bias\): expected shape "
                       r"\[1000\], got \[10\]"):
        codec.decode(_npz(entries))


def _with_member(blob: bytes, name: str, data: bytes) -> bytes:
    """Replace (or add) one member of an npz, stored, keeping the others."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            if info.filename != name:
                dst.writestr(info, src.read(info))
        dst.writestr(name, data)
    return out.getvalue()


def _npy_header(descr: str, shape: tuple, version: int = 1) -> bytes:
    text = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
    text += b" " * (-(len(text) + 11) % 64) + b"\n"
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(text)) + text


def test_header_shape_checked_before_allocation(w11):
    """A header claiming a huge array in a small member is refused, nothing allocated."""
    blob = codec.encode(w11)
    huge = _npy_header("<f4", (2**39, 1024)) + b"\0" * 16
    with pytest.raises(WeightsError, match="conv1/W.*needs.*bytes"):
        codec.decode(_with_member(blob, "conv1/W.npy", huge))
    lying = _npy_header("<f4", (4,), version=2)[:-1] + b"\n"
    lying = lying[:8] + struct.pack("<I", 2**31) + lying[12:]
    with pytest.raises(WeightsError, match="conv1/W.*header"):
        codec.decode(_with_member(blob, "conv1/W.npy", lying))
    # numpy.lib.format reads the headers: these two messages are numpy's
    with pytest.raises(WeightsError, match="magic string is not correct"):
        codec.decode(_with_member(blob, "conv1/W.npy", b"PK\x03\x04 nonsense"))
    evil = b"\x93NUMPY\x01\x00" + struct.pack("<H", 30) + b"__import__('os').system('x')  "
    with pytest.raises(WeightsError, match="malformed node or string"):  # ast.literal_eval
        codec.decode(_with_member(blob, "conv1/W.npy", evil))


def test_zip_sizes_checked_against_file(w11):
    blob = bytearray(codec.encode(w11, compression=False))
    # Patch the central directory's sizes of the first member (conv1/W).
    first = blob.find(b"PK\x01\x02")
    struct.pack_into("<I", blob, first + 20, 2**31)   # compressed size
    struct.pack_into("<I", blob, first + 24, 2**31)   # uncompressed size
    with pytest.raises(WeightsError, match="beyond the .*-byte file"):
        codec.decode(bytes(blob))
    blob = bytearray(codec.encode(w11))
    first = blob.find(b"PK\x01\x02")
    struct.pack_into("<I", blob, first + 24, 2**31)   # a "zip bomb" claim
    with pytest.raises(WeightsError, match="more than deflate can expand"):
        codec.decode(bytes(blob))


def test_other_malformed_archives(w11):
    blob = codec.encode(w11)
    with pytest.raises(WeightsError, match="not an .npy array"):
        codec.decode(_with_member(blob, "readme.txt", b"hello"))
    with pytest.raises(WeightsError, match="zip"):
        codec.decode(blob[: len(blob) // 2])
    with pytest.raises(WeightsError, match=codec.META_KEY):
        codec.decode(_with_member(blob, codec.META_KEY + ".npy",
                                  _npz_member(np.array("{not json"))))
    with pytest.raises(WeightsError, match=codec.META_KEY):
        codec.decode(_with_member(blob, codec.META_KEY + ".npy",
                                  _npz_member(np.zeros(3, np.float32))))
    with pytest.raises(WeightsError, match="conv1/W.*shape"):
        entries = _chainer_like(w11)
        entries["conv1/W"] = np.zeros((5, 3, 3, 3), np.float32)
        codec.decode(_npz(entries))


def _npz_member(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()
