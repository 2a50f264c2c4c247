"""The torch ``.pth`` codec without torch: round trips, variant inference, and refusal of
malicious or malformed checkpoints (real torch is checked in conformance/test_torch.py)."""

import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

from ports import formats
from ports.errors import WeightsError
from ports.formats import _pickle
from ports.formats import torch as tf
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants


def _zip(pkl: bytes, storages=(), extra=None) -> bytes:
    buf = io.BytesIO()
    _pickle.write_zip(buf, "archive", pkl, list(storages), extra)
    return buf.getvalue()


def _state_pickle(w):
    table = tf.key_table(w.variant)
    return _pickle.dumps_state_dict({table[k]: w.tensors[k] for k in w.variant.params()})


@pytest.fixture(scope="module")
def w11():
    return seeded_weights(Variant("1_1"))


@pytest.mark.parametrize("vid", [v.id for v in all_variants()] + ["1_1-p0-none-c10"])
def test_round_trip_is_bit_exact_with_metadata(vid, tmp_path):
    w = seeded_weights(Variant.from_id(vid))
    path = tmp_path / "w.pth"
    assert formats.write(w, path) == [path]
    back = formats.read(path)
    assert back.variant == w.variant and back.meta == w.meta
    assert all(back[k].tobytes() == w[k].tobytes() for k in w.tensors)


def test_file_layout_matches_torch_save(w11, tmp_path):
    path = tmp_path / "squeezenet1_1.pth"
    tf.write(w11, path)
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        assert names[0] == "squeezenet1_1/data.pkl"
        assert {"squeezenet1_1/version", "squeezenet1_1/byteorder"} <= set(names)
        for info in z.infolist():
            assert info.compress_type == zipfile.ZIP_STORED
            if "/data/" in info.filename:  # storages start 64-byte aligned, like torch's
                start = info.header_offset + 30 + len(info.filename) + len(info.extra)
                assert start % 64 == 0
    assert tf.encode(w11) == tf.encode(w11)  # deterministic


def test_bare_torchvision_state_dict_infers_the_variant():
    for vid, want in [("1_0-p1-none", "1_0-p0-none"), ("1_1-p0-simple", "1_1-p0-none"),
                      ("1_1-p1-complex-c10", "1_1-p0-complex-c10")]:
        w = seeded_weights(Variant.from_id(vid))
        pkl, storages = _state_pickle(w)
        back = tf.decode(_zip(pkl, storages))  # no metadata record: torchvision defaults
        assert back.variant.id == want and back.meta["preprocessing"] == "torchvision"
        again = tf.decode(_zip(pkl, storages), variant=w.variant)
        assert all(again[k].tobytes() == w[k].tobytes() for k in w.tensors)


def test_nested_checkpoints_and_module_prefix(w11):
    pkl, storages = _state_pickle(w11)
    inner = pkl[2:-1]  # without PROTO and STOP
    for key in ("state_dict", "model"):
        outer = (b"\x80\x02}(X" + struct.pack("<I", len(key)) + key.encode() + inner
                 + b"X\x05\x00\x00\x00epochK\x07u.")
        back = tf.decode(_zip(outer, storages))
        assert all(back[k].tobytes() == w11[k].tobytes() for k in w11.tensors)
    table = tf.key_table(w11.variant)
    pkl, storages = _pickle.dumps_state_dict(
        {"module." + table[k]: w11.tensors[k] for k in w11.variant.params()})
    assert tf.decode(_zip(pkl, storages)).variant == w11.variant


class _Exec:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


class _System:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [_Exec, _System])
@pytest.mark.parametrize("where", ["top", "value"])
def test_malicious_pickle_is_refused_without_running(payload, where, tmp_path):
    marker = tmp_path / "pwned"
    evil = payload(marker)
    obj = evil if where == "top" else {"features.0.weight": evil}
    pkl = pickle.dumps(obj, protocol=2)
    path = tmp_path / "evil.pth"
    path.write_bytes(_zip(pkl))
    with pytest.raises(WeightsError) as e:
        formats.read(path)
    assert not marker.exists()
    name = "builtins.exec" if payload is _Exec else os.system.__module__ + ".system"
    assert name in str(e.value) and "evil.pth" in str(e.value)
    # The payload is live: plain pickle would have run it.
    pickle.loads(pkl)
    assert marker.exists()


@pytest.mark.parametrize("module,name", [
    ("torch", "load"), ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("numpy.core.multiarray", "_reconstruct"), ("builtins", "getattr"),
    ("collections", "defaultdict")])
def test_other_globals_are_refused(module, name):
    pkl = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    with pytest.raises(WeightsError, match=f"{module}.{name}"):
        tf.decode(_zip(pkl))


def _one_tensor(size, stride, offset=0, numel=6, record_bytes=24, key="0"):
    p = _pickle._Pickle()
    p.global_("collections", "OrderedDict")
    p.op(b")R(")
    p.string("features.0.weight")
    p.global_("torch._utils", "_rebuild_tensor_v2")
    p.op(b"((")
    p.string("storage")
    p.global_("torch", "FloatStorage")
    p.string(key)
    p.string("cpu")
    p.int_(numel)
    p.op(b"tQ")
    p.int_(offset)
    p.tuple_(size)
    p.tuple_(stride)
    p.op(b"\x89}tRu.")
    return _zip(bytes(p.out), [b"\0" * record_bytes])


@pytest.mark.parametrize("kwargs,match", [
    (dict(size=(2, 3), stride=(3, 1), offset=1), "reaches element 6 of storage '0'"),
    (dict(size=(7,), stride=(1,)), "reaches element"),
    (dict(size=(2, 3), stride=(3, 1), numel=10**12), "but its record holds 24"),
    (dict(size=(2, 3), stride=(3, 1), record_bytes=20), "but its record holds 20"),
    (dict(size=(2, 3), stride=(3, 1), key="../x"), "bad storage key"),
    (dict(size=(2, 3), stride=(3, 1), key="9"), "has no record"),
    (dict(size=(10**6, 10**6), stride=(0, 0)), "elements from a storage of 6"),
    (dict(size=(2, -3), stride=(3, 1)), "bad size"),
])
def test_storages_are_bounds_checked_before_allocation(kwargs, match):
    with pytest.raises(WeightsError, match=match):
        tf.decode(_one_tensor(**kwargs))


def test_strided_views_are_rebuilt_like_torch():
    storage = np.arange(12, dtype="<f4")
    p = _pickle._Pickle()
    p.op(b"(")  # a tuple of two views of one storage: transposed and offset
    for size, stride, offset in (((3, 2), (1, 3), 0), ((2, 2), (4, 1), 3)):
        p.global_("torch._utils", "_rebuild_tensor_v2")
        p.op(b"((")
        p.string("storage")
        p.global_("torch", "FloatStorage")
        p.string("0")
        p.string("cpu")
        p.int_(12)
        p.op(b"tQ")
        p.int_(offset)
        p.tuple_(size)
        p.tuple_(stride)
        p.op(b"\x89}tR")
    p.op(b"t.")
    obj, _ = _pickle.load_zip(_zip(bytes(p.out), [storage.tobytes()]))
    a, b = (t.array for t in obj)
    assert np.array_equal(a, storage[:6].reshape(2, 3).T)
    assert np.array_equal(b, np.array([[3, 4], [7, 8]], np.float32))


@pytest.mark.parametrize("blob,match", [
    (b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "legacy"),
    (b"hello world", "not a zip archive"),
    (b"PK\x03\x04garbage", "bad zip archive"),
])
def test_non_checkpoints_are_refused(blob, match):
    with pytest.raises(WeightsError, match=match):
        tf.decode(blob)


def test_torchscript_and_wrong_architecture_are_refused(w11):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("m/constants.pkl", b"\x80\x02).")
    with pytest.raises(WeightsError, match="TorchScript"):
        tf.decode(buf.getvalue())
    table = tf.key_table(w11.variant)
    arrays = {table[k]: w11.tensors[k] for k in w11.variant.params()}
    arrays["features.0.weight"] = np.zeros((32, 3, 3, 3), np.float32)
    with pytest.raises(WeightsError, match=r"\[32, 3, 3, 3\]"):
        tf.decode(_zip(*_pickle.dumps_state_dict(arrays)))
    del arrays["features.0.weight"]
    with pytest.raises(WeightsError, match="features.0.weight"):
        tf.decode(_zip(*_pickle.dumps_state_dict(arrays)))
    arrays = {table[k]: w11.tensors[k] for k in w11.variant.params()}
    arrays["features.99.weight"] = np.zeros(3, np.float32)
    with pytest.raises(WeightsError, match="unexpected keys: features.99.weight"):
        tf.decode(_zip(*_pickle.dumps_state_dict(arrays)))


def test_half_storages_widen_exactly(w11):
    # HalfStorage: patch the storage type name in the pickle and halve the records
    table = tf.key_table(w11.variant)
    half = {table[k]: w11.tensors[k].astype(np.float16) for k in w11.variant.params()}
    pkl, _ = _pickle.dumps_state_dict(half)
    pkl = pkl.replace(b"torch\nFloatStorage\n", b"torch\nHalfStorage\n")
    back = tf.decode(_zip(pkl, [a.tobytes() for a in half.values()]))
    assert all(np.array_equal(back[k], w11[k].astype(np.float16).astype(np.float32))
               for k in w11.tensors)


def test_build_cannot_tamper_with_the_builders():
    # GLOBAL torch._utils._rebuild_tensor_v2; (None, {"__defaults__": (1,)}) BUILD
    pkl = (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__"
           b"K\x01\x85s\x86b.")
    with pytest.raises(WeightsError, match="set state on torch._utils._rebuild_tensor_v2"):
        tf.decode(_zip(pkl))
    w = seeded_weights(Variant("1_1"))
    assert tf.decode(tf.encode(w)).variant == w.variant
