"""Keras 2 files written by tf_keras itself, read and written by our legacy-HDF5 codec
``keras-h5`` (:mod:`ports.formats.keras_legacy`); ``tox -e tf-keras`` (tf_keras 2.21.0 on
tensorflow 2.21.0, CPU).

The framework-free tests (``tests/test_format_keras_files.py``) check the codec against
files it wrote itself; only files tf_keras wrote show that it reads and writes what tf_keras
does.  Here tf_keras builds the widely used Keras 2 SqueezeNet v1.1 (its layer names ``conv1``,
``fire2/squeeze1x1``, ``fire2/expand1x1``, ``fire2/expand3x3``, ..., ``conv10``, and its
``MaxPooling2D(3, 2)``: ``'valid'``, floor mode), built below from ``ports.spec``, holding the
seeded canonical weights, and proves:

* its ``save_weights("x.h5")`` and ``save("m.h5")`` files read back bit-exact, and the
  whole-model file's summary (``tools/convert``) names its floor-mode pooling;
* ``tools/convert`` takes its file to every format of ``ports.formats.FORMATS`` and each reads
  back bit-exact (``.net`` holds at most 255 distinct values per layer, so that one is fed
  the same model holding 8-bit-codebook weights; the seeded weights are refused, as asserted);
* its own logits equal the float64 NumPy reference's at 224x224 (floor and ceil pooling see
  the same windows for v1.1) within the float32 tolerance, and differ at 227x227, where
  they equal the reference's with floor-mode pooling: the summary's note matters;
* the other way: files our codec writes, under our layer names and under the Keras 2 ones,
  are the HDF5 tree tf_keras writes and load with tf_keras ``model.load_weights`` (by
  order and by name) into a model of those names, giving the reference logits.

tf_keras cannot share keras-tf's environment (it requires the ``tensorflow`` distribution,
keras-tf has ``tensorflow-cpu``), hence its own (see tox.ini).
"""

import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tf_keras  # the tf-keras environment runs this module

import ports.numpy as ref
from conformance.harness import ROOT, assert_agrees, compare, tolerance
from conformance.hdf5_tree import tree
from conformance.inputs import inputs
from ports import formats
from ports import spec as S
from ports.formats import keras as k3
from ports.formats import keras_legacy
from ports.formats.canonical import Weights, make
from ports.layouts import nchw_to_nhwc, oihw_to_hwio
from ports.seeded import seeded_weights
from ports.spec import Variant

V = Variant("1_1")
NAME = "tf-keras"    # the tolerance table's default float32 bounds apply
CONVERT = [sys.executable, str(ROOT / "tools" / "convert")]
FLOOR = "floor mode ('valid': pool1, pool3, pool5)"
RELEASE_KINDS = {"InputLayer": "input_layer", "Conv2D": "conv2d", "Activation": "activation",
                 "MaxPooling2D": "max_pooling2d", "Concatenate": "concatenate",
                 "Dropout": "dropout", "GlobalAveragePooling2D": "global_average_pooling2d"}


# --- the models, in tf_keras -------------------------------------------------------------------
def conv_name(canonical: str, naming: str) -> str:
    """Layer name of a convolution: the Keras 2 release's (``fire2/squeeze1x1``) or ours
    (``fire2_squeeze``)."""
    if naming == "ports":
        return canonical.replace(".", "_")
    fire, _, role = canonical.partition(".")
    return f"{fire}/{'squeeze1x1' if role == 'squeeze' else role}" if role else fire


def squeezenet(v: Variant, naming: str, *, ceil: bool = False) -> tf_keras.Model:
    """A tf_keras functional SqueezeNet for ``v`` (no bypass, no conv10 padding: the Keras 2
    release has neither), NHWC.  ``naming="keras2"``: the release's layers (a separate ReLU
    ``Activation`` per convolution, a softmax ``loss`` last); ``"ports"``: the layers of
    ``ports.keras.SqueezeNet`` under its names, ending in the logits.  Max pools are
    ``MaxPooling2D(3, 2)`` (floor mode); ``ceil=True`` puts a ``ZeroPadding2D`` of one
    row and column at the bottom/right before each, which is ceil mode exactly here (the
    pools read ReLU outputs, >= 0)."""
    assert v.bypass == "none" and v.final_conv_padding == 0, v.id
    L = tf_keras.layers
    k2 = naming == "keras2"

    def conv(c: S.Conv, x, relu: bool):
        padding = "valid" if c.padding == 0 else "same"
        assert c.padding == 0 or (c.stride == 1 and 2 * c.padding == c.kernel - 1), c
        name = conv_name(c.name, naming)
        x = L.Conv2D(c.out_channels, c.kernel, strides=c.stride, padding=padding,
                     activation=None if k2 or not relu else "relu", name=name)(x)
        if k2 and relu:
            fire, _, part = name.rpartition("/")
            x = L.Activation("relu", name=f"{fire}/relu_{part}")(x)
        return x

    x = inp = L.Input((None, None, 3), name="input_1" if k2 else "input")
    for layer in v.layers():
        if isinstance(layer, S.Conv):
            x = conv(layer, x, relu=False)
        elif isinstance(layer, S.ReLU):
            x = (L.Activation("relu", name=f"relu_{layer.of}") if k2 else
                 L.ReLU(name=layer.name))(x)
        elif isinstance(layer, S.MaxPool):
            if ceil:
                x = L.ZeroPadding2D(((0, layer.stride - 1), (0, layer.stride - 1)),
                                    name=f"{layer.name}_pad")(x)
            x = L.MaxPooling2D(layer.kernel, layer.stride, name=layer.name)(x)
        elif isinstance(layer, S.Fire):
            s = conv(layer.squeeze, x, relu=True)
            x = L.Concatenate(axis=-1, name=f"{layer.name}/concat" if k2 else
                              f"{layer.name}_concat")(
                [conv(layer.expand1x1, s, relu=True), conv(layer.expand3x3, s, relu=True)])
        elif isinstance(layer, S.Dropout):
            x = L.Dropout(layer.rate, name=layer.name)(x)
        elif isinstance(layer, S.GlobalAvgPool):
            x = L.GlobalAveragePooling2D(name="global_average_pooling2d" if k2 else
                                         layer.name)(x)
            if k2:
                x = L.Activation("softmax", name="loss")(x)
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    return tf_keras.Model(inp, x, name="squeezenet")


def set_weights(model: tf_keras.Model, w: Weights, naming: str) -> None:
    for c in w.variant.convs():
        model.get_layer(conv_name(c.name, naming)).set_weights(
            [oihw_to_hwio(w[f"{c.name}.weight"]), w[f"{c.name}.bias"]])


def logits(model: tf_keras.Model, size: int) -> np.ndarray:
    """tf_keras ``predict`` on the conformance inputs: the pre-softmax scores (the release's
    global average pool, before its ``loss`` softmax)."""
    if model.layers[-1].name == "loss":
        model = tf_keras.Model(model.input, model.get_layer("global_average_pooling2d").output)
    return model.predict(nchw_to_nhwc(inputs(size)), batch_size=8, verbose=0)


def codebook(w: Weights, levels: int = 255) -> Weights:
    """``w`` with each weight tensor rounded to ``levels`` evenly spaced values: what a Deep
    Compression ``.net`` (8-bit codebook) holds exactly."""
    tensors = dict(w.tensors)
    for k, t in w.tensors.items():
        if k.endswith(".weight"):
            lo, hi = float(t.min()), float(t.max())
            grid = np.linspace(lo, hi, levels, dtype=np.float32)
            tensors[k] = grid[np.rint((t - lo) / (hi - lo) * (levels - 1)).astype(int)]
    return make(tensors, w.variant, preprocessing="none", source="8-bit codebook of seeded")


# --- the files tf_keras writes ----------------------------------------------------------------
@pytest.fixture(scope="module")
def seeded() -> Weights:
    return seeded_weights(V)


@pytest.fixture(scope="module")
def release(seeded) -> tf_keras.Model:
    """The Keras 2 SqueezeNet v1.1 in tf_keras, holding the seeded weights."""
    model = squeezenet(V, "keras2")
    set_weights(model, seeded, "keras2")
    return model


@pytest.fixture(scope="module")
def saved(release, tmp_path_factory) -> dict[str, Path]:
    """tf_keras's own files: ``weights`` (``save_weights``), ``model`` (``save``), and
    ``codebook`` (``save_weights`` of the release holding 8-bit-codebook weights)."""
    d = tmp_path_factory.mktemp("tf_keras")
    files = {"weights": d / "x.h5", "model": d / "m.h5", "codebook": d / "codebook.h5"}
    release.save_weights(files["weights"])
    with warnings.catch_warnings():  # "This file format is considered legacy": the point
        warnings.simplefilter("ignore", UserWarning)
        release.save(files["model"])
    other = squeezenet(V, "keras2")
    set_weights(other, codebook(seeded_weights(V)), "keras2")
    other.save_weights(files["codebook"])
    return files


def same_tensors(expected: Weights, actual: Weights) -> None:
    assert set(actual.tensors) == set(expected.tensors)
    for k, t in expected.tensors.items():
        assert actual[k].dtype == np.float32 and actual[k].tobytes() == t.tobytes(), k


def test_model_is_the_layout_the_codec_tables_name():
    """Our tf_keras models have exactly the layers (in tf_keras' order) the codec's tables
    list: ``keras2_layers`` for the release, ``keras_layers`` for ours."""
    release = squeezenet(V, "keras2")
    assert [(la.name, RELEASE_KINDS[type(la).__name__]) for la in release.layers] == \
        [(la.name, la.kind) for la in keras_legacy.keras2_layers(V)]
    assert [la.name for la in squeezenet(V, "ports").layers] == \
        [la.name for la in k3.keras_layers(V)]


def test_save_weights_file_reads_bit_exact(saved, seeded):
    with h5py.File(saved["weights"], "r") as f:
        assert f.attrs["keras_version"] == tf_keras.__version__ == keras_legacy.KERAS_VERSION
        assert "fire2/squeeze1x1" in list(f.attrs["layer_names"])
        assert f["fire2/squeeze1x1/fire2/squeeze1x1/kernel:0"].shape == (1, 1, 64, 16)
    for back in (formats.read(saved["weights"]), formats.read(saved["weights"], "keras-h5")):
        assert back.variant == V
        same_tensors(seeded, back)
        source = back.meta["source"]
        assert "weights file (Keras 2.21.0, backend tensorflow" in source
        assert "the Keras 2 SqueezeNet's layer names" in source
        assert "pooling mode not recorded" in source and "floor mode ('valid')" in source


def test_whole_model_file_reads_bit_exact_and_names_floor_mode(saved, seeded, tmp_path):
    path = saved["model"]
    with h5py.File(path, "r") as f:
        assert "model_config" in f.attrs and "model_weights" in f
    back = formats.read(path)
    assert back.variant == V
    same_tensors(seeded, back)
    assert "whole-model file" in back.meta["source"] and FLOOR in back.meta["source"]
    out = tmp_path / "out.safetensors"
    run = subprocess.run(CONVERT + [str(path), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    first = run.stdout.splitlines()[0]
    assert first.startswith(f"read  {path} (keras-h5): SqueezeNet 1_1-p0-none"), first
    assert f"its model max-pooled in {FLOOR}, not in Caffe's ceil mode" in first
    assert "different network than Caffe's SqueezeNet (the logits agree at 224x224; " \
           "differ at 227x227)" in first
    same_tensors(seeded, formats.read(out))
    # tf_keras itself reopens the file it wrote as the same network
    reopened = tf_keras.models.load_model(path)
    assert [la.name for la in reopened.layers] == [la.name for la in squeezenet(V, "keras2").layers]


# --- tools/convert to every format ----------------------------------------------------------
# The codebook formats (.net, .dcz) store each layer's weights through a codebook of at most
# 256 entries: seeded weights have thousands of distinct values per layer, which they refuse
# (asserted below); they are fed tf_keras's file of the same model holding codebook weights.
SOURCE = {name: "codebook" if fmt.codebook else "weights" for name, fmt in formats.FORMATS.items()}


@pytest.mark.parametrize("name", list(formats.FORMATS))
def test_tf_keras_file_converts_to_every_format(saved, seeded, tmp_path, name):
    src = saved[SOURCE[name]]
    expected = seeded if SOURCE[name] == "weights" else codebook(seeded)
    dst = tmp_path / f"out{formats.FORMATS[name].extensions[0]}"
    run = subprocess.run(CONVERT + [str(src), str(dst), "--to", name], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    written = formats.outputs(dst, name)
    assert all(p.exists() for p in written), written
    back = formats.read(dst, name)
    assert back.variant == V
    same_tensors(expected, back)


def test_seeded_weights_do_not_fit_a_net_file(saved, tmp_path):
    run = subprocess.run(CONVERT + [str(saved["weights"]), str(tmp_path / "out.net")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    assert "distinct non-zero values; the .net format stores at most 255" in run.stderr


# --- tf_keras's logits against the float64 reference -------------------------------------------
@pytest.fixture(scope="module")
def reference(seeded):
    return ref.load(seeded)


def test_logits_at_224_equal_the_reference(release, reference):
    """At 224x224 the windows of every v1.1 pool tile its input exactly (111, 55 and 27
    rows), so floor and ceil mode agree, and tf_keras computes Caffe's SqueezeNet."""
    atol, rtol = tolerance(NAME, "float32")
    got = logits(release, 224)
    a = assert_agrees(got, ref.predict(reference, inputs(224)), atol, rtol,
                      "Logits of tf_keras's Keras 2 SqueezeNet v1.1 at 224")
    print(f"\ntf_keras vs float64 reference at 224: max abs {a.max_abs:.3g}, "
          f"max rel {a.max_rel:.3g}")
    # and the softmax the release ends in is of those logits
    e = np.exp(got - got.max(axis=1, keepdims=True))
    np.testing.assert_allclose(release.predict(nchw_to_nhwc(inputs(224)), verbose=0),
                               e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def floor_reference(model, x: np.ndarray, monkeypatch) -> np.ndarray:
    """The reference with floor-mode max pools (each pool's input cut to the rows and
    columns whole windows cover), planted in its network module."""
    from ports.numpy import network

    ceil_pool = network.max_pool_ceil

    def floor_pool(h, pool=network.POOL):
        floor = S.MaxPool(pool.name, pool.kernel, pool.stride, ceil_mode=False)
        rows, cols = ((floor.out_size(n) - 1) * pool.stride + pool.kernel
                      for n in h.shape[2:])
        return ceil_pool(h[:, :, :rows, :cols], pool)
    with monkeypatch.context() as m:
        m.setattr(network, "max_pool_ceil", floor_pool)
        return ref.predict(model, x)


def test_logits_at_227_differ_by_floor_mode(release, reference, monkeypatch):
    """At 227x227 pool3's input has 56 rows: ceil mode pools 28 windows (the last one
    overhanging), floor mode 27, dropping the last row and column (then pool5: 14 against
    13).  The logits are not Caffe's; they are the reference's with floor-mode pools."""
    atol, rtol = tolerance(NAME, "float32")
    got = logits(release, 227)
    ceil = compare(got, ref.predict(reference, inputs(227)), atol, rtol)
    print(f"\ntf_keras (floor) vs float64 reference (ceil) at 227: max abs {ceil.max_abs:.3g}, "
          f"max rel {ceil.max_rel:.3g}, {ceil.mismatches} / {ceil.total} logits beyond "
          f"atol {atol:g}")
    assert ceil.mismatches > ceil.total // 2 and ceil.max_abs > 1000 * atol
    assert_agrees(got, floor_reference(reference, inputs(227), monkeypatch), atol, rtol,
                  "Logits of tf_keras at 227 and the reference with floor-mode pooling")


# --- our files in tf_keras ------------------------------------------------------------------
def ours(w: Weights, path: Path, naming: str) -> Path:
    """The legacy .h5 our codec writes: ``naming="ports"`` what ``tools/convert SRC w.h5``
    writes, ``"keras2"`` the same under the Keras 2 release's layer names."""
    if naming == "ports":
        formats.write(w, path, "keras-h5")
    else:
        path.write_bytes(keras_legacy.encode(w, naming="keras2"))
    return path


@pytest.mark.parametrize("naming", ["ports", "keras2"])
def test_codec_writes_what_tf_keras_writes(seeded, tmp_path, naming):
    """Same groups, attributes (values), datasets (shape, dtype, bytes) as tf_keras's
    ``save_weights`` of a model with those layer names; the codec adds only its metadata."""
    model = squeezenet(V, naming)
    set_weights(model, seeded, naming)
    theirs = tmp_path / "theirs.h5"
    model.save_weights(theirs)
    assert tree(ours(seeded, tmp_path / "ours.h5", naming)) == tree(theirs)


@pytest.mark.parametrize("by_name", [False, True], ids=["by-order", "by-name"])
@pytest.mark.parametrize("naming", ["ports", "keras2"])
def test_codec_file_loads_in_tf_keras(seeded, reference, tmp_path, naming, by_name):
    path = ours(seeded, tmp_path / "w.h5", naming)
    atol, rtol = tolerance(NAME, "float32")
    sizes = (224, 227) if naming == "ports" else (224,)   # ceil mode: ours only
    for size in sizes:
        model = squeezenet(V, naming, ceil=size == 227)   # fresh: random initial weights
        model.load_weights(path, by_name=by_name)
        for c in V.convs():
            kernel, bias = model.get_layer(conv_name(c.name, naming)).get_weights()
            assert kernel.tobytes() == oihw_to_hwio(seeded[f"{c.name}.weight"]).tobytes()
            assert bias.tobytes() == seeded[f"{c.name}.bias"].tobytes()
        assert_agrees(logits(model, size), ref.predict(reference, inputs(size)), atol, rtol,
                      f"Logits of tf_keras after load_weights of our {naming} .h5 at {size}")

