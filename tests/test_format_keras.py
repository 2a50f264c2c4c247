"""Keras 3 ``.weights.h5`` codec, framework-free (h5py and NumPy only, no Keras).

The Keras side of the contract (real Keras loads our files and gives the golden logits,
files saved by real Keras convert back bit-exact, the layer table equals ``model.layers``)
is tested in ``conformance/test_keras.py`` in the keras-tf / keras-jax / keras-torch
environments.
"""

import json

import h5py
import numpy as np
import pytest

from ports import formats  # noqa: E402
from ports.errors import WeightsError  # noqa: E402
from ports.formats import keras as codec  # noqa: E402
from ports.formats.canonical import Weights  # noqa: E402
from ports.layouts import oihw_to_hwio  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant, all_variants  # noqa: E402

VARIANTS = all_variants()


@pytest.fixture(scope="module")
def seeded():
    cache = {}

    def get(v: Variant) -> Weights:
        if v not in cache:
            cache[v] = seeded_weights(v)
        return cache[v]
    return get


def write(tmp_path, weights, name="w.weights.h5"):
    path = tmp_path / name
    formats.write(weights, path)
    return path


def strip_metadata(path, *, names=False):
    """Make the file look saved by real Keras (no metadata attribute); with ``names`` also
    like an older Keras 3 (no layer names, no groups for weightless layers)."""
    with h5py.File(path, "r+") as f:
        del f.attrs[codec.META_ATTR]
        if names:
            for key in list(f["layers"]):
                vars_ = f["layers"][key]["vars"]
                del vars_.attrs["name"]
                if len(vars_) == 0:
                    del f["layers"][key]
            del f["vars"]


def path_of(path, layer):
    with h5py.File(path, "r") as f:
        for key in f["layers"]:
            if f["layers"][key]["vars"].attrs.get("name") == layer:
                return f"layers/{key}"
    raise KeyError(layer)


# --- tables -----------------------------------------------------------------------------------
def test_detected_by_name():
    assert formats.detect("w.weights.h5") == "keras"
    assert formats.detect("W.WEIGHTS.H5") == "keras"
    assert formats.detect("W.H5") == "keras-h5"  # Keras' legacy HDF5 (keras_legacy)


def test_key_table_paths():
    v = Variant("1_1")
    table = codec.key_table(v)
    assert set(table) == set(v.params())
    assert table["conv1.weight"] == "layers/conv2d/vars/0"
    assert table["fire2.squeeze.bias"] == "layers/conv2d_1/vars/1"
    assert table["fire9.expand3x3.weight"] == "layers/conv2d_24/vars/0"
    assert table["conv10.weight"] == "layers/conv2d_25/vars/0"
    complex_ = codec.key_table(Variant("1_0", bypass="complex"))
    assert complex_["fire2.bypass.weight"] == "layers/conv2d_4/vars/0"
    assert complex_["conv10.bias"] == "layers/conv2d_29/vars/1"


def test_layer_names_are_keras_safe():
    for v in VARIANTS:
        names = [layer.name for layer in codec.keras_layers(v)]
        assert len(set(names)) == len(names)
        assert all("/" not in n and "." not in n for n in names)
        assert {codec.layer_name(c.name) for c in v.convs()} <= set(names)


@pytest.mark.parametrize("v", VARIANTS, ids=[v.id for v in VARIANTS])
def test_layout_is_keras_layout(tmp_path, seeded, v):
    """Every layer has ``layers/<kind>[_k]/vars`` with its name; kernels HWIO float32."""
    w = seeded(v)
    path = write(tmp_path, w)
    layers = codec.keras_layers(v)
    paths = codec.layer_paths(v)
    with h5py.File(path, "r") as f:
        assert set(f) == {"layers", "vars"}
        assert f["vars"].attrs["name"] == codec.model_name(v) and len(f["vars"]) == 0
        assert len(f["layers"]) == len(layers)
        for layer in layers:
            vars_ = f[paths[layer.name]]["vars"]
            assert vars_.attrs["name"] == layer.name
            if layer.canonical is None:
                assert len(vars_) == 0
                continue
            assert sorted(vars_) == ["0", "1"]
            assert vars_["0"].dtype == np.dtype("<f4")
            np.testing.assert_array_equal(vars_["0"][()],
                                          oihw_to_hwio(w[f"{layer.canonical}.weight"]))
            np.testing.assert_array_equal(vars_["1"][()], w[f"{layer.canonical}.bias"])


# --- round trips ------------------------------------------------------------------------------
@pytest.mark.parametrize("v", VARIANTS, ids=[v.id for v in VARIANTS])
def test_round_trip_bit_exact_with_metadata(tmp_path, seeded, v):
    w = seeded(v)
    back = formats.read(write(tmp_path, w))
    assert back.meta == w.meta
    assert set(back.tensors) == set(w.tensors)
    for k, t in w.tensors.items():
        assert back[k].dtype == np.float32
        assert back[k].tobytes() == t.tobytes(), k


@pytest.mark.parametrize("v", VARIANTS, ids=[v.id for v in VARIANTS])
def test_without_metadata_variant_inferred_from_layer_names(tmp_path, seeded, v):
    w = seeded(v)
    path = write(tmp_path, w)
    strip_metadata(path)
    back = formats.read(path)
    assert back.variant == v
    assert back.meta["preprocessing"] == "none"
    assert "inferred from the layer names" in back.meta["source"]
    for k, t in w.tensors.items():
        assert back[k].tobytes() == t.tobytes(), k


def test_other_num_classes(tmp_path):
    v = Variant("1_0", 10, 1, "simple")
    w = seeded_weights(v)
    path = write(tmp_path, w)
    strip_metadata(path)
    assert formats.read(path).variant == v


@pytest.mark.parametrize("vid, assumed", [("1_1-p0-none", "1_1-p0-none"),
                                          ("1_1-p1-simple", "1_1-p0-none"),
                                          ("1_0-p1-complex", "1_0-p0-complex")])
def test_without_layer_names_shapes_decide(tmp_path, seeded, vid, assumed):
    """Older Keras 3 files: version, classes and complex bypass from the shapes; simple
    bypass and conv10 padding cannot be seen and default to none / 0 (said in source)."""
    v = Variant.from_id(vid)
    path = write(tmp_path, seeded(v))
    strip_metadata(path, names=True)
    back = formats.read(path)
    assert back.variant.id == assumed
    assert "cannot be told apart" in back.meta["source"]
    given = formats.read(path, variant=v)
    assert given.variant == v and "given by the caller" in given.meta["source"]
    for k, t in seeded(v).tensors.items():
        assert given[k].tobytes() == t.tobytes()


def replace_dataset(path, key, new) -> None:
    """In a 1_1 file, replace the dataset holding canonical ``key`` by ``new(old data)``: an
    array, or ``(shape, dtype)`` for an empty dataset (HDF5 never allocates it)."""
    with h5py.File(path, "r+") as f:
        p = codec.key_table(Variant("1_1"))[key]
        value = new(f[p][()])
        del f[p]
        if isinstance(value, tuple):
            f.create_dataset(p, shape=value[0], dtype=value[1])
        else:
            f[p] = value


def test_float64_file_rounds_to_float32(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    replace_dataset(path, "conv1.weight", lambda old: old.astype(np.float64) + 1e-12)
    assert formats.read(path)["conv1.weight"].dtype == np.float32


# --- refusals ---------------------------------------------------------------------------------
def test_wrong_variant_names_the_layer(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    strip_metadata(path)
    with pytest.raises(WeightsError, match=r"conv1: kernel has shape \[3, 3, 3, 64\], "
                                           r"expected \[7, 7, 3, 96\]"):
        formats.read(path, variant=Variant("1_0"))
    with pytest.raises(WeightsError, match="missing layers fire2_bypass, fire2_add"):
        formats.read(path, variant=Variant("1_1", bypass="complex"))
    with pytest.raises(WeightsError, match="missing layer conv10_pad"):
        formats.read(path, variant=Variant("1_1", final_conv_padding=1))
    with pytest.raises(WeightsError, match="layer conv10: bias has shape"):
        formats.read(path, variant=Variant("1_1", num_classes=10))


def test_metadata_disagreeing_with_layers_refused(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1", bypass="simple")))
    with h5py.File(path, "r+") as f:
        meta = json.loads(f.attrs[codec.META_ATTR])
        f.attrs[codec.META_ATTR] = json.dumps({**meta, "bypass": "none"})
    with pytest.raises(WeightsError, match="unexpected layers fire3_add, fire5_add"):
        formats.read(path)


def test_unexpected_layer_refused(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_0", bypass="complex")))
    with pytest.raises(WeightsError, match="unexpected layers fire2_add, fire2_bypass, fire4_add"):
        formats.read(path, variant=Variant("1_0", bypass="simple"))


@pytest.mark.parametrize("layer", ["fire3_expand1x1", "conv10", "fire5_add"])
def test_missing_layer_names_it(tmp_path, seeded, layer):
    path = write(tmp_path, seeded(Variant("1_1", bypass="simple")))
    where = path_of(path, layer)
    with h5py.File(path, "r+") as f:
        del f[where]
    with pytest.raises(WeightsError, match=f"missing layer {layer}") as e:
        formats.read(path)
    assert str(path) in str(e.value) and "(keras)" in str(e.value)


def test_missing_variable_names_the_layer(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    with h5py.File(path, "r+") as f:
        del f[codec.key_table(Variant("1_1"))["fire4.squeeze.bias"]]
    with pytest.raises(WeightsError, match="layer fire4_squeeze: no variable 1"):
        formats.read(path)


def test_missing_conv_without_names_refused(tmp_path, seeded):
    v = Variant("1_1")
    path = write(tmp_path, seeded(v))
    strip_metadata(path, names=True)
    with h5py.File(path, "r+") as f:
        del f["layers/conv2d_25"]
    with pytest.raises(WeightsError, match="conv10"):
        formats.read(path, variant=v)


def test_absurd_shape_refused_before_reading(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    replace_dataset(path, "fire2.expand3x3.weight", lambda old: ((2**20, 2**20, 16, 64), "<f4"))
    with pytest.raises(WeightsError, match=r"fire2_expand3x3: kernel has shape \[1048576"):
        formats.read(path)


def test_absurd_num_classes_refused(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    strip_metadata(path)
    replace_dataset(path, "conv10.bias", lambda old: ((2**40,), "<f4"))
    with pytest.raises(WeightsError, match="layer conv10"):
        formats.read(path)


def test_integer_dtype_refused(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    replace_dataset(path, "conv1.bias", lambda old: old.astype(np.int32))
    with pytest.raises(WeightsError, match="layer conv1: variable 1 has dtype int32"):
        formats.read(path)


def test_non_finite_refused(tmp_path, seeded):
    v = Variant("1_1")
    path = write(tmp_path, seeded(v))
    with h5py.File(path, "r+") as f:
        f[codec.key_table(v)["conv1.bias"]][0] = np.nan
    with pytest.raises(WeightsError, match="conv1.bias: 1 non-finite"):
        formats.read(path)


def test_not_hdf5_refused(tmp_path):
    path = tmp_path / "junk.weights.h5"
    path.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        formats.read(path)


def test_keras2_file_gets_a_hint(tmp_path):
    path = tmp_path / "old.weights.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"conv1"]
    with pytest.raises(WeightsError, match="Keras 2.*format keras-h5"):
        formats.read(path)


def test_bad_metadata_refused(tmp_path, seeded):
    path = write(tmp_path, seeded(Variant("1_1")))
    with h5py.File(path, "r+") as f:
        f.attrs[codec.META_ATTR] = "{not json"
    with pytest.raises(WeightsError, match="not valid JSON"):
        formats.read(path)
    with h5py.File(path, "r+") as f:
        f.attrs[codec.META_ATTR] = json.dumps({"variant": 1})
    with pytest.raises(WeightsError, match="strings to strings"):
        formats.read(path)


def test_write_no_overwrite(tmp_path, seeded):
    w = seeded(Variant("1_1"))
    path = write(tmp_path, w)
    with pytest.raises(FileExistsError):
        formats.write(w, path, overwrite=False)


def test_safetensors_keras_safetensors_is_byte_identical(tmp_path, seeded):
    from ports.formats import safetensors

    w = seeded(Variant("1_0", final_conv_padding=1, bypass="complex"))
    back = formats.read(write(tmp_path, w))
    assert safetensors.encode(back) == safetensors.encode(w)
