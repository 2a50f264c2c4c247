"""Our Keras files in real Keras 3, on the backend named by ``KERAS_BACKEND`` (tox envs
keras-tf, keras-jax, keras-torch): ``.keras`` model files (:mod:`ports.formats.keras_file`)
and legacy ``.h5`` weights (:mod:`ports.formats.keras_legacy`), written without Keras
(``tests/test_format_keras_files.py`` tests them framework-free).  For every variant
(``conformance.golden.VARIANTS``), float32, NHWC input, the tolerance table's bounds:

* **opening**: the ``.keras`` file ``ports.formats.write`` writes opens with
  ``keras.saving.load_model`` and gives the golden logits at 224 and 227.  The 8 variants of
  the built-in form are opened in a fresh Python that never imports this project (an import
  hook refuses ``ports``, and ``"ports" not in sys.modules`` is asserted there): a user needs
  nothing of ours.  The same process cannot open the 4 complex-bypass files (Keras' "Could
  not locate class 'SqueezeNet'"); after ``import ports.keras`` they open in-process as a
  ``ports.keras.SqueezeNet``.  The codec's :func:`~ports.formats.keras_file.notes` and the
  converter's printed note say exactly that, per variant;
* **what Keras writes**: the same model built in real Keras -- the built-in form from
  ``ports.spec`` with Keras' own layers (below, independent of ``keras_config``), the
  complex form as ``ports.keras.SqueezeNet`` -- holding the seeded weights, saved by
  ``model.save("k.keras")``, has the same members in the same order and compression, the
  same ``config.json`` (every field: none is ignored), and the same ``model.weights.h5``
  tree (datasets, attributes, bytes) but for the codec's metadata attribute, which Keras
  does not write; of ``metadata.json`` only ``date_saved`` differs (the time of saving:
  only its form is checked).  Our reader reads Keras' file back bit-exact;
* **legacy .h5**: the ``.h5`` file ``ports.formats.write`` writes loads with Keras 3's
  ``model.load_weights("w.h5")`` into ``ports.keras.SqueezeNet`` and into the tuned model of
  ``ports.keras.fast`` (``ports.keras.load``'s class), which then hold the seeded weights
  bit-exact (every variant).  Their golden logits are checked on a representative subset
  (:data:`LEGACY_LOGITS`: none / simple / complex x 1_0 / 1_1, conv10 padding 0 and 1;
  reference model at 224 and 227, tuned model at 227), to keep each backend's run short: the
  loader fills layers by order and the bit-exact weights already prove every variant.
  Keras 3's ``save_weights`` refuses to write a legacy ``.h5`` (it wants ``.weights.h5``), so
  the other direction uses the legacy writer Keras 3 keeps for ``model.save("m.h5")``
  (``keras.src.legacy.saving.legacy_h5_format``): its weights-only files and its whole-model
  files read back bit-exact for every variant, a ``ports.keras.SqueezeNet``'s (complex
  bypass: its config names the class and its arguments, no layer graph) included.

Logits come from ``model(x, training=False)`` on one NHWC float32 batch of the 8 inputs.
"""

import json
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conformance.registry import PORTS, keras_port

PORT = keras_port()
kport = PORTS[PORT].import_module()  # sets JAX_ENABLE_X64 etc. before keras is imported

import h5py  # noqa: E402
import keras  # noqa: E402

from conformance import golden  # noqa: E402
from conformance.harness import assert_agrees, tolerance  # noqa: E402
from conformance.hdf5_tree import tree  # noqa: E402
from conformance.inputs import SIZES, inputs  # noqa: E402
from ports import formats  # noqa: E402
from ports import spec as S  # noqa: E402
from ports.cli import convert  # noqa: E402
from ports.formats import keras as k3  # noqa: E402
from ports.formats import keras_config as kc  # noqa: E402
from ports.formats import keras_file  # noqa: E402
from ports.keras import fast  # noqa: E402
from ports.layouts import nchw_to_nhwc, oihw_to_hwio  # noqa: E402
from ports.seeded import seeded_weights  # noqa: E402
from ports.spec import Variant  # noqa: E402

VARIANTS = golden.VARIANTS
COMPLEX = [vid for vid in VARIANTS if Variant.from_id(vid).bypass == "complex"]
BUILTIN = [vid for vid in VARIANTS if vid not in COMPLEX]  # the form without ports.keras
# none / simple / complex x 1_0 / 1_1, conv10's padding 0 and 1 both present
LEGACY_LOGITS = ["1_0-p0-none", "1_1-p1-none", "1_0-p1-simple", "1_1-p0-simple",
                 "1_0-p1-complex", "1_1-p0-complex"]
ATOL, RTOL = tolerance(PORT, "float32")
UNKNOWN_CLASS = "Could not locate class 'SqueezeNet'"
BUILTIN_NOTE = "built-in Keras layers only"
_seeded_cache: dict = {}


def seeded(vid: str):
    if vid not in _seeded_cache:
        _seeded_cache[vid] = seeded_weights(Variant.from_id(vid))
    return _seeded_cache[vid]


def run(model, size: int) -> np.ndarray:
    """The model's logits on the conformance inputs, NHWC float32 (one batch, inference)."""
    return keras.ops.convert_to_numpy(model(nchw_to_nhwc(inputs(size)), training=False))


def agrees(logits, vid: str, size: int, what: str):
    agreement = assert_agrees(logits, golden.load(vid, size), ATOL, RTOL,
                              f"Logits of {PORT} ({what}) on {vid} at {size}")
    print(f"{PORT} {what} {vid} {size}: max abs {agreement.max_abs:.3g}")
    return agreement


# --- a Python that has never imported ports ---------------------------------------------------
FRESH = r'''
import json, sys

class RefusePorts:  # this project cannot be imported here, and any attempt is recorded
    attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "ports" or name.startswith("ports."):
            self.attempts.append(name)
            raise ModuleNotFoundError(f"ports is not available in this process ({name})")
        return None

sys.meta_path.insert(0, RefusePorts())
import numpy as np
import keras

job = json.load(open(sys.argv[1]))
report = {}
for vid, path in job["files"].items():
    try:
        model = keras.saving.load_model(path)
    except Exception as e:
        report[vid] = {"error": type(e).__name__, "message": str(e)[:4000]}
        continue
    report[vid] = {"class": f"{type(model).__module__}.{type(model).__name__}"}
    for size, x in job["inputs"].items():
        logits = model(np.load(x), training=False)
        np.save(f"{job['out']}/{vid}-{size}.npy", keras.ops.convert_to_numpy(logits))
report["ports imported"] = sorted(m for m in sys.modules if m.split(".")[0] == "ports")
report["ports attempted"] = RefusePorts.attempts
assert "ports" not in sys.modules, report["ports imported"]
json.dump(report, open(job["report"], "w"))
'''


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """vid -> the ``.keras`` file ``ports.formats.write`` wrote for it."""
    d = tmp_path_factory.mktemp("keras-files")
    out = {}
    for vid in VARIANTS:
        out[vid] = d / f"{vid}.keras"
        formats.write(seeded(vid), out[vid])
    return out


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, keras_files):
    """What a Python without ports makes of every file: vid -> {"class", size -> logits} or
    {"error", "message"}; one process opens them all (start-ups are slow)."""
    d = tmp_path_factory.mktemp("fresh")
    job = {"files": {vid: str(p) for vid, p in keras_files.items()}, "inputs": {},
           "out": str(d), "report": str(d / "report.json")}
    for size in SIZES:
        job["inputs"][str(size)] = str(d / f"x{size}.npy")
        np.save(job["inputs"][str(size)], nchw_to_nhwc(inputs(size)))
    (d / "job.json").write_text(json.dumps(job))
    proc = subprocess.run([sys.executable, "-c", FRESH, str(d / "job.json")], cwd=d,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((d / "report.json").read_text())
    for vid in VARIANTS:
        if "error" not in report[vid]:
            report[vid].update({size: np.load(d / f"{vid}-{size}.npy") for size in SIZES})
    return report


def test_fresh_process_never_imported_ports(fresh):
    assert fresh["ports imported"] == [] and fresh["ports attempted"] == []


@pytest.mark.parametrize("vid", BUILTIN)
def test_builtin_keras_file_opens_without_ports(fresh, vid):
    assert fresh[vid].get("error") is None, fresh[vid]
    assert fresh[vid]["class"] == "keras.src.models.functional.Functional"
    for size in SIZES:
        agrees(fresh[vid][size], vid, size, "keras.saving.load_model, no ports")


@pytest.mark.parametrize("vid", COMPLEX)
def test_complex_keras_file_needs_ports_keras(fresh, keras_files, vid):
    assert fresh[vid].get("error") == "TypeError", fresh[vid]
    assert UNKNOWN_CLASS in fresh[vid]["message"]
    assert "squeezenet_ports>SqueezeNet" in fresh[vid]["message"]
    model = keras.saving.load_model(keras_files[vid])  # ports.keras is imported here
    assert type(model) is kport.SqueezeNet and model.variant == Variant.from_id(vid)
    for size in SIZES:
        agrees(run(model, size), vid, size, "keras.saving.load_model")


@pytest.mark.parametrize("vid", VARIANTS)
def test_notes_say_which_form_was_written(fresh, keras_files, tmp_path, capsys, vid):
    """The codec's notes and the converter's printed note agree with what Keras did."""
    notes = keras_file.notes(seeded(vid))
    opened = "error" not in fresh[vid]
    assert len(notes) == 1
    assert notes[0].startswith(BUILTIN_NOTE) == opened
    assert (kc.IMPORT_NOTE in notes[0]) == (not opened)
    with zipfile.ZipFile(keras_files[vid]) as z:
        config = json.loads(z.read("config.json"))
    assert (config.get("registered_name") == kc.PORTS_CLASS) == (not opened)
    src = tmp_path / "w.safetensors"
    formats.write(seeded(vid), src)
    capsys.readouterr()
    assert convert.main([str(src), str(tmp_path / "c.keras")]) == 0
    printed = [line[len("note  "):] for line in capsys.readouterr().out.splitlines()
               if line.startswith("note  ")]
    assert printed == notes


# --- the files Keras writes itself ------------------------------------------------------------
def builtin_model(v: Variant) -> keras.Model:
    """The built-in form in real Keras, from ``ports.spec``: ``ports.keras``'s layer names,
    Keras' own layers only; a ceil-mode pool is ``ZeroPadding2D(((0, s-1), (0, s-1)))``
    then a ``valid`` ``MaxPooling2D`` (exact: every pool reads values >= 0).  Each layer
    gets ``dtype="float32"``, as in ``ports.keras``: layers left to the default share one
    policy object, which Keras then saves with a ``shared_object_id`` (that object's id(),
    a memory address) in every layer's config -- the same model, another config."""
    def layer(cls, *args, **kwargs):  # each its own float32 policy, as ports.keras builds
        return getattr(keras.layers, cls)(*args, dtype="float32", **kwargs)

    def conv(c: S.Conv, x, activation=None):
        name = k3.layer_name(c.name)
        same = c.padding and c.stride == 1 and 2 * c.padding == c.kernel - 1
        if c.padding and not same:
            x = layer("ZeroPadding2D", c.padding, name=f"{name}_pad")(x)
        return layer("Conv2D", c.out_channels, c.kernel, strides=c.stride, activation=activation,
                     padding="same" if same else "valid", name=name)(x)

    x = inputs = keras.Input(shape=(None, None, 3), dtype="float32", name="input")
    for op in v.layers():
        if isinstance(op, S.Conv):
            x = conv(op, x)
        elif isinstance(op, S.ReLU):
            x = layer("ReLU", name=op.name)(x)
        elif isinstance(op, S.MaxPool):
            assert op.ceil_mode
            x = layer("ZeroPadding2D", ((0, op.stride - 1), (0, op.stride - 1)),
                      name=f"{op.name}_pad")(x)
            x = layer("MaxPooling2D", op.kernel, op.stride, name=op.name)(x)
        elif isinstance(op, S.Fire):
            s = conv(op.squeeze, x, "relu")
            out = layer("Concatenate", name=f"{op.name}_concat")(
                [conv(op.expand1x1, s, "relu"), conv(op.expand3x3, s, "relu")])
            if op.bypass is not None:
                out = layer("Add", name=f"{op.name}_add")(
                    [out, x if op.bypass == "identity" else conv(op.bypass_conv, x)])
            x = out
        elif isinstance(op, S.Dropout):
            x = layer("Dropout", op.rate, name=op.name)(x)
        elif isinstance(op, S.GlobalAvgPool):
            x = layer("GlobalAveragePooling2D", name=op.name)(x)
        else:  # pragma: no cover
            raise TypeError(op)
    return keras.Model(inputs, x, name=k3.model_name(v))


def keras_model(vid: str) -> keras.Model:
    """The model our ``.keras`` file holds for ``vid``, built by Keras, seeded weights."""
    v = Variant.from_id(vid)
    if vid in COMPLEX:
        return kport.load(seeded(vid), fast=False)
    model = builtin_model(v)
    w = seeded(vid)
    for canonical, name in k3.conv_layer_names(v).items():
        model.get_layer(name).set_weights([oihw_to_hwio(w[f"{canonical}.weight"]),
                                           w[f"{canonical}.bias"]])
    return model


def json_diff(a, b, path: str = ""):
    """Where two JSON values differ: ``(path, a's, b's)``."""
    if type(a) is not type(b):
        yield path, a, b
    elif isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k in a and k in b:
                yield from json_diff(a[k], b[k], f"{path}/{k}")
            else:
                yield f"{path}/{k}", a.get(k, "<absent>"), b.get(k, "<absent>")
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{path} length", len(a), len(b)
        for i, (x, y) in enumerate(zip(a, b)):
            yield from json_diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield path, a, b


def same_tensors(back, vid: str) -> None:
    w = seeded(vid)
    assert back.variant == w.variant
    assert set(back.tensors) == set(w.tensors)
    for k, t in w.tensors.items():
        assert back[k].tobytes() == t.tobytes(), k


@pytest.mark.parametrize("vid", VARIANTS)
def test_keras_file_is_what_keras_writes(keras_files, tmp_path, vid):
    theirs = tmp_path / "k.keras"
    keras_model(vid).save(theirs)
    with zipfile.ZipFile(theirs) as a, zipfile.ZipFile(keras_files[vid]) as b:
        assert [(i.filename, i.compress_type) for i in a.infolist()] == \
            [(i.filename, i.compress_type) for i in b.infolist()]
        k, o = ({n: z.read(n) for n in z.namelist()} for z in (a, b))
    assert list(json_diff(json.loads(o["config.json"]), json.loads(k["config.json"]))) == []
    meta_k, meta_o = json.loads(k["metadata.json"]), json.loads(o["metadata.json"])
    assert meta_k.keys() == meta_o.keys() == {"keras_version", "date_saved"}
    assert meta_o["keras_version"] == meta_k["keras_version"] == keras.__version__
    for meta in (meta_k, meta_o):  # the time of saving: the one field that differs
        assert re.fullmatch(r"\d{4}-\d\d-\d\d@\d\d:\d\d:\d\d", meta["date_saved"])
    assert tree(o["model.weights.h5"]) == tree(k["model.weights.h5"])
    back = formats.read(theirs)  # Keras' own file: no metadata attribute
    assert "without metadata" in back.meta["source"]
    same_tensors(back, vid)


# --- legacy .h5 -------------------------------------------------------------------------------
@pytest.mark.parametrize("vid", VARIANTS)
def test_legacy_h5_loads_with_keras_load_weights(tmp_path, vid):
    """Into the reference model and into the tuned one, the same values in the same layers,
    the seeded ones; the golden logits on :data:`LEGACY_LOGITS` (reference model at both
    sizes, tuned model at 227: its logits equal the reference's, ``test_keras.py``)."""
    path = tmp_path / "w.h5"
    formats.write(seeded(vid), path)
    v = Variant.from_id(vid)
    model = kport.SqueezeNet(v.version, v.num_classes, v.final_conv_padding, v.bypass)
    model.load_weights(path)  # Keras' legacy loader: by order of the weighted layers
    tuned = fast.SqueezeNet(v)
    tuned.load_weights(path)
    same_tensors(kport.to_weights(model), vid)
    same_tensors(kport.to_weights(tuned), vid)
    if vid in LEGACY_LOGITS:
        for size in SIZES:
            agrees(run(model, size), vid, size, "load_weights .h5")
        agrees(run(tuned, 227), vid, 227, "fast, load_weights .h5")


def test_keras3_save_weights_will_not_write_legacy_h5(tmp_path):
    model = kport.SqueezeNet("1_1")
    with pytest.raises(ValueError, match=r"must end in `\.weights\.h5`"):
        model.save_weights(tmp_path / "w.h5")
    assert not (tmp_path / "w.h5").exists()


@pytest.fixture(scope="module")
def legacy_h5():
    """Keras 3's own legacy HDF5 writer (what ``model.save("m.h5")`` calls)."""
    from keras.src.legacy.saving import legacy_h5_format

    return legacy_h5_format


@pytest.mark.parametrize("vid", VARIANTS)
def test_keras_written_legacy_h5_reads_back_bit_exact(tmp_path, legacy_h5, vid):
    path = tmp_path / "k.h5"
    with h5py.File(path, "w") as f:
        legacy_h5.save_weights_to_hdf5_group(f, keras_model(vid))
    same_tensors(formats.read(path), vid)


@pytest.mark.parametrize("vid", VARIANTS)
def test_keras_whole_model_h5_reads_back_bit_exact(tmp_path, legacy_h5, vid):
    """``model.save("m.h5")``: Keras 3's legacy whole-model file (``save_model_to_hdf5``); a
    complex-bypass variant's config is a ``ports.keras.SqueezeNet`` (its arguments, no graph)."""
    keras_model(vid).save(tmp_path / "m.h5")
    back = formats.read(tmp_path / "m.h5")
    same_tensors(back, vid)
    assert "max pools in ceil mode" in back.meta["source"]  # zero padding, then valid
