"""Flax msgpack codec, framework-free (no JAX or Flax needed: msgpack and NumPy only).

The Flax side of the contract (real Flax restores our files, our reader reads Flax's) is
tested in ``conformance/test_flax.py`` in the ``flax`` environment.
"""

import os
import subprocess
import sys
import tempfile

import msgpack
import numpy as np
import pytest

from ports import formats  # noqa: E402
from ports.errors import WeightsError  # noqa: E402
from ports.formats import flax as codec  # noqa: E402
from ports.layouts import oihw_to_hwio  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant, all_variants  # noqa: E402


@pytest.fixture(scope="module")
def w10():
    return seeded_weights(Variant("1_0", 1000, 1, "complex"))


def flax_ndarray(arr: np.ndarray) -> msgpack.ExtType:
    """An array exactly as ``flax.serialization._msgpack_ext_pack`` encodes it."""
    tpl = (arr.shape, arr.dtype.name, arr.tobytes("C"))
    return msgpack.ExtType(1, msgpack.packb(tpl, use_bin_type=True))


def flax_file(tree) -> bytes:
    """``flax.serialization.msgpack_serialize`` of a tree of NumPy arrays (no chunking)."""
    return msgpack.packb(tree, default=lambda x: flax_ndarray(x)
                         if isinstance(x, np.ndarray) else x, strict_types=True)


def raw_tree(blob: bytes):
    return msgpack.unpackb(blob, ext_hook=lambda c, d: (c, msgpack.unpackb(d, raw=True)),
                           raw=False, strict_map_key=False)


def state_of(weights) -> dict:
    return codec.to_state(weights)


@pytest.mark.parametrize("variant", all_variants() + [Variant("1_1", 7, 1, "simple")],
                         ids=lambda v: v.id)
def test_round_trip_bit_exact(variant):
    w = seeded_weights(variant)
    back = codec.decode(codec.encode(w))
    assert back.meta == w.meta
    assert set(back.tensors) == set(w.tensors)
    for k, t in w.tensors.items():
        assert back.tensors[k].dtype == np.float32
        assert back.tensors[k].tobytes() == t.tobytes(), k


def test_read_write_through_registry(tmp_path, w10):
    path = tmp_path / "w.msgpack"
    assert formats.detect(path) == "flax"
    written = formats.write(w10, path)
    assert written == [path]
    back = formats.read(path)
    assert back.variant == w10.variant
    assert all(np.array_equal(back[k], w10[k]) for k in w10.tensors)


def test_file_layout_is_flax_nnx_state(w10):
    """Sorted keys at every level (as NNX orders its state), metadata first, ext type 1 with
    [shape, 'float32', bytes], kernels HWIO under documented paths."""
    tree = raw_tree(codec.encode(w10))
    assert list(tree)[0] == "__metadata__"
    assert tree["__metadata__"] == w10.meta
    modules = [k for k in tree if k != "__metadata__"]
    assert modules == sorted(modules) == ["conv1", "conv10"] + [f"fire{n}" for n in range(2, 10)]
    assert list(tree["fire2"]) == ["bypass", "expand1x1", "expand3x3", "squeeze"]
    assert list(tree["fire3"]) == ["expand1x1", "expand3x3", "squeeze"]
    assert list(tree["conv1"]) == ["bias", "kernel"]
    code, (shape, dtype, data) = tree["fire2"]["squeeze"]["kernel"]
    assert code == 1 and dtype == b"float32" and shape == [1, 1, 96, 16]
    want = oihw_to_hwio(w10["fire2.squeeze.weight"])
    assert data == want.astype("<f4").tobytes()
    assert codec.key_table(w10.variant)["fire2.squeeze.weight"] == "fire2/squeeze/kernel"
    assert codec.key_table(w10.variant)["conv10.bias"] == "conv10/bias"


def test_without_metadata_equals_flax_serialize(w10):
    """Our bytes equal Flax's msgpack_serialize (reproduced above from Flax's source)."""
    assert codec.encode(w10, metadata=False) == flax_file(state_of(w10))


def test_flax_saved_file_infers_variant():
    for v, expected in [(Variant("1_0", 1000, 1, "none"), Variant("1_0", 1000, 0, "none")),
                        (Variant("1_1", 21, 0, "complex"), Variant("1_1", 21, 0, "complex")),
                        (Variant("1_1", 1000, 0, "simple"), Variant("1_1", 1000, 0, "none"))]:
        w = seeded_weights(v)
        blob = flax_file(state_of(w))
        back = codec.decode(blob)
        # conv10 padding and the parameter-free simple bypass are not in the shapes
        assert back.variant == expected
        assert back.meta["preprocessing"] == "none"
        assert "inferred" in back.meta["source"]
        given = codec.decode(blob, variant=v)
        assert given.variant == v
        assert all(given[k].tobytes() == w[k].tobytes() for k in w.tensors)


def test_registry_read_checks_given_variant_against_metadata(tmp_path, w10):
    path = tmp_path / "w.msgpack"
    codec.write(w10, path)
    with pytest.raises(WeightsError, match="expected 1_0-p0-complex"):
        formats.read(path, variant=Variant("1_0", 1000, 0, "complex"))


def test_other_stored_dtypes_are_converted():
    v = Variant("1_1", 10, 0, "none")
    w = seeded_weights(v)
    st = state_of(w)
    for dt in ("float64", "float16"):
        tree = {k: {kk: a.astype(dt) for kk, a in sub.items()} if "kernel" in sub else
                {m: {kk: a.astype(dt) for kk, a in p.items()} for m, p in sub.items()}
                for k, sub in st.items()}
        back = codec.decode(flax_file(tree))
        for k in w.tensors:
            assert back[k].dtype == np.float32
            np.testing.assert_array_equal(back[k], w[k].astype(dt).astype(np.float32))
    # bfloat16: the upper 16 bits of a float32
    bias = np.array([1.5, -2.0, 0.0], np.float32)
    bf = (bias.view(np.uint32) >> 16).astype("<u2")
    ext = msgpack.ExtType(1, msgpack.packb(([3], "bfloat16", bf.tobytes()), use_bin_type=True))
    arr = codec._decode_ext(codec._Ext(ext.code, ext.data), "x")
    np.testing.assert_array_equal(arr, bias)


def test_chunked_arrays_round_trip(monkeypatch, w10):
    """Flax splits arrays above 2**30 bytes into 1-D chunks; exercised with a tiny limit."""
    monkeypatch.setattr(codec, "MAX_CHUNK_SIZE", 4096)
    blob = codec.encode(w10)
    tree = raw_tree(blob)
    node = tree["conv10"]["kernel"]
    assert node["__msgpack_chunked_array__"] is True
    assert [node["shape"][str(i)] for i in range(4)] == [1, 1, 512, 1000]
    assert len(node["chunks"]) == -(-512 * 1000 * 4 // 4096)
    assert tree["conv1"]["bias"][0] == 1  # small arrays stay plain
    back = codec.decode(blob)
    assert all(back[k].tobytes() == w10[k].tobytes() for k in w10.tensors)


def test_jax_and_flax_are_not_imported():
    code = ("import sys; from ports.formats import flax as c; from ports.seeded import "
            "seeded_weights; from ports.spec import Variant; "
            "c.decode(c.encode(seeded_weights(Variant('1_1')))); "
            "assert not {'jax', 'flax'} & set(sys.modules), sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- malformed files: every problem is a WeightsError naming the key ---------------------------
def small_tree():
    w = seeded_weights(Variant("1_1", 10, 0, "none"))
    return w, raw_tree(codec.encode(w))


def repack(tree) -> bytes:
    def conv(node):
        if isinstance(node, tuple) and len(node) == 2 and isinstance(node[0], int):
            code, payload = node
            return msgpack.ExtType(code, msgpack.packb(payload, use_bin_type=True))
        if isinstance(node, dict):
            return {k: conv(v) for k, v in node.items()}
        return node
    return msgpack.packb(conv(tree), use_bin_type=True)


def expect_error(blob: bytes, *match: str) -> WeightsError:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bad.msgpack")
        with open(path, "wb") as f:
            f.write(blob)
        with pytest.raises(WeightsError) as info:
            formats.read(path)
    for m in match:
        assert m in str(info.value), str(info.value)
    assert info.value.format == "flax" and info.value.path == path
    assert str(info.value).startswith(f"{path} (flax): ") and str(info.value).count(path) == 1
    return info.value


def test_not_msgpack():
    expect_error(b"", "not a msgpack file")
    expect_error(b"\x93\x01", "not a msgpack file")  # truncated array
    expect_error(msgpack.packb([1, 2, 3]), "top level")


def test_payload_length_checked_before_allocation():
    _, tree = small_tree()
    code, (shape, dtype, data) = tree["fire2"]["squeeze"]["kernel"]
    tree["fire2"]["squeeze"]["kernel"] = (code, [shape, dtype, data[:-4]])
    expect_error(repack(tree), "fire2/squeeze/kernel", "needs", "payload has")
    # a huge shape with a tiny payload: rejected by arithmetic, nothing allocated
    tree["fire2"]["squeeze"]["kernel"] = (code, [[2 ** 39, 2 ** 39], dtype, b"\0" * 8])
    expect_error(repack(tree), "fire2/squeeze/kernel", "needs")
    for bad in ([-1, 4], [1.5], "abc", [1] * 9):
        tree["fire2"]["squeeze"]["kernel"] = (code, [bad, dtype, b""])
        expect_error(repack(tree), "fire2/squeeze/kernel", "shape")


def test_bad_array_payloads():
    _, tree = small_tree()
    code, (shape, dtype, data) = tree["conv1"]["bias"]
    cases = [
        ((code, [shape, b"int64", data]), "dtype"),
        ((code, [shape, b"object", data]), "dtype"),
        ((code, [shape, dtype]), "[shape, dtype, data]"),
        ((code, [shape, dtype, 7]), "bin"),
        ((3, [shape, dtype, data]), "ext type 3"),
        (5, "expected an array"),
        ("x", "expected an array"),
    ]
    for leaf, reason in cases:
        tree["conv1"]["bias"] = leaf
        expect_error(repack(tree), "conv1/bias", reason)
    tree["conv1"]["bias"] = msgpack.ExtType(1, b"\xc1")  # never-used msgpack byte
    blob = msgpack.packb(tree, default=repack)  # ExtType passes through unchanged
    expect_error(blob, "conv1/bias", "not valid msgpack")


def test_missing_unexpected_and_misshaped_keys():
    w, tree = small_tree()
    del tree["fire3"]["expand3x3"]["bias"]
    tree["fire3"]["extra"] = tree["conv1"]["bias"]
    expect_error(repack(tree), "missing keys: fire3/expand3x3/bias",
                 "unexpected keys: fire3/extra")
    _, tree = small_tree()
    tree["fire4"]["expand1x1"]["kernel"] = tree["fire4"]["expand3x3"]["kernel"]
    expect_error(repack(tree), "fire4/expand1x1/kernel: expected shape [1, 1, 32, 128] (HWIO)")
    # an OIHW kernel stored by mistake is a shape error, never silently transposed
    _, tree = small_tree()
    oihw = w["conv1.weight"]
    tree["conv1"]["kernel"] = (1, [list(oihw.shape), b"float32", oihw.tobytes()])
    expect_error(repack(tree), "conv1/kernel", "expected shape [3, 3, 3, 64]")


def test_bad_metadata():
    _, tree = small_tree()
    tree["__metadata__"] = {"variant": 1}
    expect_error(repack(tree), "__metadata__ must map strings to strings")
    _, tree = small_tree()
    tree["__metadata__"]["bypass"] = "weird"
    expect_error(repack(tree), "metadata", "bypass")


def test_uninferable_without_metadata():
    _, tree = small_tree()
    del tree["__metadata__"]
    tree["conv1"]["kernel"] = (1, [[5, 5, 3, 64], b"float32", b"\0" * (5 * 5 * 3 * 64 * 4)])
    expect_error(repack(tree), "cannot infer the variant", "conv1/kernel")
    _, tree = small_tree()
    del tree["__metadata__"], tree["conv10"]
    expect_error(repack(tree), "conv10/kernel")


def test_bad_chunked_arrays(monkeypatch, w10):
    monkeypatch.setattr(codec, "MAX_CHUNK_SIZE", 1 << 20)
    tree = raw_tree(codec.encode(w10))
    node = tree["conv10"]["kernel"]
    del node["chunks"]["1"]
    expect_error(repack(tree), "conv10/kernel", "chunks hold")
    tree = raw_tree(codec.encode(w10))
    tree["conv10"]["kernel"]["shape"] = {"0": 3}
    expect_error(repack(tree), "conv10/kernel")
    tree = raw_tree(codec.encode(w10))
    del tree["conv10"]["kernel"]["shape"]
    expect_error(repack(tree), "conv10/kernel", "exactly")


def test_random_corruption_is_always_a_weights_error():
    """Flipped, dropped and appended bytes: WeightsError or a valid file, never a crash."""
    import hypothesis
    st = hypothesis.strategies
    w = seeded_weights(Variant("1_1", 10, 0, "none"))
    blob = codec.encode(w)
    header_end = 2000  # keys, metadata and the first array headers live here

    @hypothesis.settings(max_examples=150, deadline=None, database=None)
    @hypothesis.given(st.lists(st.tuples(st.integers(0, header_end), st.integers(0, 255)),
                               min_size=1, max_size=4),
                      st.integers(0, len(blob)))
    def run(edits, cut):
        bad = bytearray(blob[:max(cut, header_end + 1)])
        for pos, val in edits:
            bad[pos] = val
        try:
            codec.decode(bytes(bad))
        except WeightsError:
            pass

    run()


def test_deep_nesting_is_refused():
    node = {"kernel": 1}
    for _ in range(500):
        node = {"m": node}
    expect_error(msgpack.packb({"conv1": node}), "nested deeper")
