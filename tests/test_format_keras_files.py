"""Keras' own files, framework-free: ``.keras`` model files (``ports.formats.keras_file``)
and legacy ``.h5`` weights (``ports.formats.keras_legacy``), with h5py, zipfile and NumPy only.

Real Keras 3 opening our files (``keras.saving.load_model``, ``model.load_weights("w.h5")``)
with the golden logits, and the configs equal to what Keras writes, are tested in
``conformance/test_keras_files.py`` (keras-tf, keras-jax, keras-torch); files written by
tf_keras itself in ``conformance/test_tf_keras.py`` (``tox -e tf-keras``).
"""

import io
import json
import struct
import zipfile

import h5py
import numpy as np
import pytest

from ports import formats
from ports.cli import convert
from ports.errors import WeightsError
from ports.formats import keras as k3
from ports.formats import keras_config as kc
from ports.formats import keras_file, keras_legacy
from ports.formats.canonical import Weights
from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

VARIANTS = all_variants()
IDS = [v.id for v in VARIANTS]


@pytest.fixture(scope="module")
def seeded():
    cache = {}

    def get(v: Variant) -> Weights:
        if v not in cache:
            cache[v] = seeded_weights(v)
        return cache[v]
    return get


def same_tensors(a: Weights, b: Weights) -> None:
    assert set(a.tensors) == set(b.tensors)
    for k, t in a.tensors.items():
        assert b[k].tobytes() == t.tobytes(), k


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def rezip(path, contents: dict[str, bytes], compression=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in contents.items():
            z.writestr(name, data)


def without_metadata(h5: bytes) -> bytes:
    """A ``model.weights.h5`` as real Keras saves it (no metadata attribute)."""
    buf = io.BytesIO(h5)
    with h5py.File(buf, "r+") as f:
        del f.attrs[k3.META_ATTR]
    return buf.getvalue()


def refuse(path, match, **kw):
    with pytest.raises(WeightsError, match=match) as e:
        formats.read(path, **kw)
    assert "\n" not in str(e.value)
    return str(e.value)


# --- the registry ------------------------------------------------------------------------------
def test_endings_select_the_format_keras_gives_them():
    assert formats.detect("m.keras") == "keras-file"
    assert formats.detect("w.h5") == "keras-h5" == formats.detect("W.HDF5")
    assert formats.detect("w.weights.h5") == "keras"       # the longest ending wins
    assert formats.FORMATS["keras-file"].module == "keras_file"
    assert formats.FORMATS["keras-h5"].module == "keras_legacy"


# --- .keras ------------------------------------------------------------------------------------
@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
def test_keras_file_round_trip_and_layout(tmp_path, seeded, v):
    path = tmp_path / "m.keras"
    formats.write(seeded(v), path)
    with zipfile.ZipFile(path) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["metadata.json", "config.json", "model.weights.h5"]
    assert all(i.compress_type == zipfile.ZIP_STORED for i in infos)  # as Keras writes them
    m = members(path)
    assert json.loads(m["metadata.json"])["keras_version"] == kc.KERAS_VERSION
    config = json.loads(m["config.json"])
    assert config == kc.model_config(v)
    if v.bypass == "complex":
        assert config["registered_name"] == "squeezenet_ports>SqueezeNet"
        assert config["config"] == {"version": v.version, "num_classes": v.num_classes,
                                    "final_conv_padding": v.final_conv_padding,
                                    "bypass": v.bypass, "dtype": "float32"}
        assert m["model.weights.h5"] == k3.encode(seeded(v))   # the .weights.h5 codec's file
    else:
        kinds = {layer["class_name"] for layer in config["config"]["layers"]}
        assert kinds <= {"InputLayer", "Conv2D", "ReLU", "ZeroPadding2D", "MaxPooling2D",
                         "Concatenate", "Add", "Dropout", "GlobalAveragePooling2D"}
        assert all(layer["registered_name"] is None for layer in config["config"]["layers"])
    back = formats.read(path)
    assert back.meta == seeded(v).meta
    same_tensors(seeded(v), back)


def test_builtin_form_pools_are_zero_padding_then_valid_max_pooling():
    v = Variant("1_1", bypass="simple")
    layers = {la["name"]: la for la in kc.builtin_config(v)["config"]["layers"]}
    for pool in ("pool1", "pool3", "pool5"):
        assert layers[pool]["config"]["padding"] == "valid"
        assert layers[pool]["inbound_nodes"][0]["args"][0]["config"]["keras_history"] == \
            [f"{pool}_pad", 0, 0]
        assert layers[f"{pool}_pad"]["config"]["padding"] == [[0, 1], [0, 1]]
    assert layers["pool10"]["class_name"] == "GlobalAveragePooling2D"
    assert [la.kind for la in kc.builtin_layers(v)].count("zero_padding2d") == 3
    assert kc.needs_ports(Variant("1_0", bypass="complex"))
    assert not any(kc.needs_ports(x) for x in VARIANTS if x.bypass != "complex")


def test_the_converter_says_which_files_need_ports_keras(tmp_path, seeded, capsys):
    src = tmp_path / "w.safetensors"
    formats.write(seeded(Variant("1_0", bypass="complex")), src)
    assert convert.main([str(src), str(tmp_path / "c.keras")]) == 0
    assert "note  needs `import ports.keras` before keras.saving.load_model" in \
        capsys.readouterr().out
    formats.write(seeded(Variant("1_1")), src)
    assert convert.main([str(src), str(tmp_path / "b.keras")]) == 0
    out = capsys.readouterr().out
    assert "note  built-in Keras layers only" in out and "import ports.keras" not in out


@pytest.mark.parametrize("vid", ["1_1-p1-simple", "1_0-p0-complex"])
def test_keras_file_without_metadata_takes_the_architecture_from_its_config(tmp_path, seeded,
                                                                            vid):
    """A file Keras saved itself: no metadata attribute."""
    v = Variant.from_id(vid)
    path = tmp_path / "m.keras"
    formats.write(seeded(v), path)
    m = members(path)
    rezip(path, {**m, "model.weights.h5": without_metadata(m["model.weights.h5"])})
    back = formats.read(path)
    assert back.variant == v and back.meta["preprocessing"] == "none"
    assert f"architecture {vid} from config.json" in back.meta["source"]
    assert "Keras 3.15.1" in back.meta["source"]
    assert ("import ports.keras" in back.meta["source"]) == (v.bypass == "complex")
    same_tensors(seeded(v), back)
    assert formats.read(path, variant=v).variant == v
    refuse(path, "config.json describes SqueezeNet .*, not 1_1-p0-none",
           variant=Variant("1_1"))


def floor_mode_keras_file(tmp_path, weights) -> object:
    """A functional model with our names whose pools are plain ``MaxPooling2D`` (floor)."""
    v = weights.variant
    config = kc.builtin_config(v)
    layers = [la for la in config["config"]["layers"] if not la["name"].endswith("pool1_pad")
              and not la["name"].endswith(("pool3_pad", "pool5_pad"))]
    for la in layers:
        if la["name"] in ("pool1", "pool3", "pool5"):
            la["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0] = \
                "relu1" if la["name"] == "pool1" else f"fire{la['name'][-1]}_concat"
    config["config"]["layers"] = layers
    graph = [(la["name"], kc.to_snake_case(la["class_name"])) for la in layers]
    path = tmp_path / "floor.keras"
    rezip(path, {"metadata.json": b"{}", "config.json": json.dumps(config).encode(),
                 "model.weights.h5": without_metadata(k3.encode(weights, graph))})
    return path


def test_keras_file_with_floor_mode_pools_says_it_is_another_network(tmp_path, seeded):
    v = Variant("1_1")
    back = formats.read(floor_mode_keras_file(tmp_path, seeded(v)))
    same_tensors(seeded(v), back)
    assert "floor mode ('valid': pool1, pool3, pool5)" in back.meta["source"]
    assert "different network than Caffe's" in back.meta["source"]
    assert "agree at 224x224; differ at 227x227" in back.meta["source"]


def test_pooling_modes_of_a_config():
    graph = kc.graph_layers(kc.builtin_config(Variant("1_0")), "c")
    assert kc.pooling(graph) == dict.fromkeys(["pool1", "pool4", "pool8"],
                                              "ceil (zero padding)")
    assert kc.floor_note(Variant("1_0"), kc.pooling(graph)) is None
    note = kc.floor_note(Variant("1_0"), {"pool1": "floor", "pool4": "ceil"})
    assert "floor mode ('valid': pool1)" in note and "agree at 227x227; differ at 224x224" in note


def test_keras_file_bad_archives(tmp_path, seeded):
    good = tmp_path / "good.keras"
    formats.write(seeded(Variant("1_1", 10)), good)
    m = members(good)
    path = tmp_path / "bad.keras"
    path.write_bytes(k3.encode(seeded(Variant("1_1", 10))))
    refuse(path, r"not a zip archive \(a .keras file is one\).*an HDF5 file")
    path.write_bytes(b"PK\x03\x04" + b"\0" * 30)
    refuse(path, "bad zip archive")
    rezip(path, {k: v for k, v in m.items() if k != "config.json"})
    refuse(path, "no config.json: not a Keras 3 .keras file")
    rezip(path, {k: v for k, v in m.items() if k != "model.weights.h5"})
    refuse(path, "no model.weights.h5$")
    rezip(path, {**{k: v for k, v in m.items() if k != "model.weights.h5"},
                 "model.weights.npz": b"x"})
    refuse(path, "weights_format='npz'")
    with zipfile.ZipFile(path, "w") as z, pytest.warns(UserWarning, match="Duplicate name"):
        for name, data in [*m.items(), ("config.json", m["config.json"])]:
            z.writestr(name, data)
    refuse(path, "member 'config.json' appears twice")
    rezip(path, {**m, "model.weights.h5": b"not hdf5"})
    refuse(path, "model.weights.h5: not an HDF5 file")


def test_keras_file_zip_guard(tmp_path, seeded):
    """Sizes a member declares are checked before anything is read or inflated."""
    m = members(_written(tmp_path, seeded))
    path = tmp_path / "bomb.keras"
    rezip(path, {**m, "config.json": b" " * 200_000}, zipfile.ZIP_DEFLATED)
    data = bytearray(path.read_bytes())
    for start in _central_entries(data):   # config.json claims 2 GB uncompressed
        name_len = struct.unpack_from("<H", data, start + 28)[0]
        if data[start + 46:start + 46 + name_len] == b"config.json":
            struct.pack_into("<I", data, start + 24, 2_000_000_000)
    path.write_bytes(bytes(data))
    refuse(path, "member config.json claims 2000000000 bytes .* more than deflate can expand")
    big = json.dumps({"class_name": "Functional", "pad": " " * (kc.MAX_CONFIG + 1)})
    rezip(path, {**m, "config.json": big.encode()}, zipfile.ZIP_DEFLATED)
    refuse(path, f"member config.json declares {len(big)} bytes, more than the")
    with zipfile.ZipFile(path, "w") as z:
        for k in range(keras_file.MAX_MEMBERS + 1):
            z.writestr(f"assets/{k}", b"")
    refuse(path, "more than 1000")


def _written(tmp_path, seeded):
    path = tmp_path / "w.keras"
    formats.write(seeded(Variant("1_1", 10)), path)
    return path


def _central_entries(data: bytearray):
    start = data.find(b"PK\x01\x02")
    while start >= 0:
        yield start
        start = data.find(b"PK\x01\x02", start + 4)


@pytest.mark.parametrize("config, match", [
    (b"{not json", "config.json is not valid JSON"),
    (b"\xff\xfe", "config.json is not UTF-8 text"),
    (b"[1, 2]", "config.json is not a serialized Keras model"),
    (b"[" * 100_000 + b"]" * 100_000, "config.json is not valid JSON: RecursionError"),
    (json.dumps({"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "fc"}}]}}).encode(),
     "config.json: layer fc is a Dense: a SqueezeNet is made of"),
    (json.dumps({"class_name": "MyNet", "config": {}}).encode(), "holds a 'MyNet' model"),
    (json.dumps({"class_name": "Functional", "config": {"layers": 3}}).encode(),
     "no list of layers"),
    (json.dumps({"class_name": "Functional", "config": {"layers": [
        {"class_name": "Conv2D"}]}}).encode(), "layer #0 lacks a class_name, config or name"),
    (json.dumps({"module": "ports.keras", "class_name": "SqueezeNet",
                 "registered_name": "squeezenet_ports>SqueezeNet",
                 "config": {"version": "2_0"}}).encode(),
     "squeezenet_ports>SqueezeNet arguments"),
])
def test_keras_file_bad_configs(tmp_path, seeded, config, match):
    path = tmp_path / "c.keras"
    rezip(path, {**members(_written(tmp_path, seeded)), "config.json": config})
    refuse(path, match)


def test_keras_file_config_and_weights_disagree(tmp_path, seeded):
    m = members(_written(tmp_path, seeded))
    config = json.loads(m["config.json"])
    layers = config["config"]["layers"]
    layers.append({**layers[-1], "class_name": "Softmax", "name": "fc",
                   "config": {"name": "fc"}})
    layers.append({**layers[-1], "class_name": "Conv2D", "name": "fire2_expand1x1",
                   "config": {"name": "fire2_expand1x1"}})
    path = tmp_path / "c.keras"
    rezip(path, {**m, "config.json": json.dumps(config).encode()})
    refuse(path, "layer name 'fire2_expand1x1' used twice")
    layers.pop()
    rezip(path, {**m, "config.json": json.dumps(config).encode()})
    refuse(path, r"does not describe SqueezeNet 1_1-p0-none-c10: layer fc \(Softmax\) is not "
           "part")
    layers[-1]["class_name"] = "Dense"    # not a layer a SqueezeNet is made of: refused first
    rezip(path, {**m, "config.json": json.dumps(config).encode()})
    refuse(path, "config.json: layer fc is a Dense: a SqueezeNet is made of")
    layers.pop()
    layers[1]["config"]["filters"] = 32   # conv1 with 32 filters: no SqueezeNet
    rezip(path, {**m, "config.json": json.dumps(config).encode()})
    refuse(path, r"weight shape \[3, 3, 3, 32\] \(HWIO\)")
    config = kc.builtin_config(Variant("1_1", 20))      # the config says 20 classes
    rezip(path, {**m, "config.json": json.dumps(config).encode()})
    refuse(path, r"layer conv10: kernel has shape \[1, 1, 512, 10\], expected \[1, 1, 512, 20\]")


# --- legacy .h5 --------------------------------------------------------------------------------
def h5_attrs(group) -> dict:
    return {k: group.attrs[k] for k in group.attrs}


@pytest.mark.parametrize("v", VARIANTS, ids=IDS)
def test_legacy_h5_round_trip(tmp_path, seeded, v):
    path = tmp_path / "w.h5"
    formats.write(seeded(v), path)
    back = formats.read(path)
    assert back.meta == seeded(v).meta
    same_tensors(seeded(v), back)


def test_legacy_h5_layout_is_tf_keras_save_weights(tmp_path, seeded):
    v = Variant("1_0", final_conv_padding=1, bypass="complex")
    path = tmp_path / "w.h5"
    formats.write(seeded(v), path)
    with h5py.File(path, "r") as f:
        names = list(f.attrs["layer_names"])   # h5py reads ASCII strings as str
        assert names == [layer.name for layer in k3.keras_layers(v)]
        assert f.attrs["backend"] == "tensorflow" and f.attrs["keras_version"] == "2.21.0"
        assert h5py.check_string_dtype(f.attrs.get_id("layer_names").dtype).encoding == "ascii"
        conv1 = f["conv1"]
        assert list(conv1.attrs["weight_names"]) == ["conv1/kernel:0", "conv1/bias:0"]
        kernel = conv1["conv1/kernel:0"]
        assert kernel.shape == (7, 7, 3, 96) and kernel.dtype == np.float32
        assert f["fire2_bypass/fire2_bypass/bias:0"].shape == (128,)
        empty = f["relu1"].attrs["weight_names"]
        assert empty.shape == (0,) and empty.dtype == np.float64   # as Keras writes it
        assert len(f["top_level_model_weights"].attrs["weight_names"]) == 0
        weighted = [n for n in names if len(f[n].attrs["weight_names"])]
        assert weighted == [k3.layer_name(c.name) for c in v.convs()]   # Keras loads by order


def keras2_file(tmp_path, weights, *, config=None, name="k2.h5", strip=True):
    path = tmp_path / name
    path.write_bytes(keras_legacy.encode(weights, naming="keras2", model_config=config))
    if strip:
        with h5py.File(path, "r+") as f:
            del f.attrs[keras_legacy.META_ATTR]
    return path


def keras2_config(v: Variant, *, ceil=False) -> dict:
    """The model config tf_keras writes for the Keras 2 SqueezeNet (the parts a reader
    looks at: classes, names, pools' padding, inbound layers)."""
    layers, previous = [], "input_1"

    def add(cls, name, **config):
        nonlocal previous
        layers.append({"class_name": cls, "config": {"name": name, **config}, "name": name,
                       "inbound_nodes": [[[previous, 0, 0, {}]]]})
        previous = name
    for layer in keras_legacy.keras2_layers(v):
        if layer.kind == "max_pooling2d" and ceil:
            add("ZeroPadding2D", f"{layer.name}_pad", padding=[[0, 1], [0, 1]])
        cls = {"input_layer": "InputLayer", "conv2d": "Conv2D", "activation": "Activation",
               "max_pooling2d": "MaxPooling2D", "concatenate": "Concatenate",
               "dropout": "Dropout", "global_average_pooling2d": "GlobalAveragePooling2D",
               "zero_padding2d": "ZeroPadding2D"}[layer.kind]
        add(cls, layer.name, padding="valid", pool_size=[3, 3], strides=[2, 2])
    return {"class_name": "Functional", "config": {"name": "squeezenet", "layers": layers}}


def test_keras2_naming_weights_only(tmp_path, seeded):
    v = Variant("1_1")
    path = keras2_file(tmp_path, seeded(v))
    with h5py.File(path, "r") as f:
        assert "fire2/squeeze1x1" in list(f.attrs["layer_names"])
        assert f["fire2"]["squeeze1x1"]["fire2/squeeze1x1/kernel:0"].shape == (1, 1, 64, 16)
    back = formats.read(path)
    same_tensors(seeded(v), back)
    source = back.meta["source"]
    assert back.variant == v and back.meta["preprocessing"] == "none"
    assert "the Keras 2 SqueezeNet's layer names" in source
    assert "bypass none and final_conv_padding 0 assumed" in source
    assert "pooling mode not recorded" in source and "floor mode ('valid')" in source
    # what the file cannot say comes from --variant
    wanted = Variant("1_1", final_conv_padding=1, bypass="simple")
    given = formats.read(path, variant=wanted)
    assert given.variant == wanted and "given by the caller" in given.meta["source"]


def test_keras2_whole_model_file_reports_floor_mode(tmp_path, seeded, capsys):
    v = Variant("1_1")
    path = keras2_file(tmp_path, seeded(v), config=keras2_config(v))
    with h5py.File(path, "r") as f:
        assert "model_weights" in f and "model_config" in f.attrs
    back = formats.read(path)
    same_tensors(seeded(v), back)
    assert "whole-model file" in back.meta["source"]
    assert "from the model config" in back.meta["source"]
    assert "floor mode ('valid': pool1, pool3, pool5)" in back.meta["source"]
    assert convert.main([str(path), str(tmp_path / "o.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "different network than Caffe's SqueezeNet" in out.splitlines()[0]
    ceil = keras2_file(tmp_path, seeded(v), config=keras2_config(v, ceil=True), name="c.h5")
    assert "max pools in ceil mode" in formats.read(ceil).meta["source"]


@pytest.mark.parametrize("name, canonical", [
    ("conv1", "conv1"), ("conv_1", "conv1"), ("conv10", "conv10"), ("conv_final", "conv10"),
    ("fire2_squeeze", "fire2.squeeze"), ("fire2/squeeze1x1", "fire2.squeeze"),
    ("fire_2_squeeze1x1", "fire2.squeeze"), ("Fire9/Expand3x3", "fire9.expand3x3"),
    ("fire4_expand_1x1", "fire4.expand1x1"), ("fire2_bypass", "fire2.bypass"),
    ("fire2.expand1x1", "fire2.expand1x1"), ("relu_conv1", None), ("fire2/concat", None),
    ("conv100", None), ("fire2/squeeze1x1x", None)])
def test_layer_names_in_the_wild(name, canonical):
    assert keras_legacy.canonical_conv(name) == canonical


def rewrite(path, edit) -> None:
    with h5py.File(path, "r+") as f:
        edit(f)


def drop_layer(f, name: str) -> None:
    """Take layer ``name`` out of ``layer_names``."""
    f.attrs["layer_names"] = [n.encode() for n in f.attrs["layer_names"] if n != name]


def test_other_weight_namings_and_split_attributes(tmp_path, seeded):
    """Keras 3's legacy writer names weights ``conv1/kernel`` (no ``:0``), Keras 1 ``W``/``b``;
    a ``layer_names`` over 64 KB is split into ``layer_names0``, ``layer_names1``, ..."""
    v = Variant("1_1", 10)
    path = tmp_path / "w.h5"
    formats.write(seeded(v), path)

    def edit(f):
        names = list(f.attrs["layer_names"])
        del f.attrs["layer_names"]
        f.attrs["layer_names0"], f.attrs["layer_names1"] = names[:5], names[5:]
        g = f["conv1"]
        g.move("conv1/kernel:0", "conv1_W")
        g.move("conv1/bias:0", "conv1_b")
        g.attrs["weight_names"] = [b"conv1_b", b"conv1_W"]      # order does not matter
        g = f["conv10"]
        g.move("conv10/kernel:0", "conv10/kernel")
        g.move("conv10/bias:0", "conv10/bias")
        g.attrs["weight_names"] = [b"conv10/kernel", b"conv10/bias"]
        del f.attrs[keras_legacy.META_ATTR]
    rewrite(path, edit)
    back = formats.read(path)
    same_tensors(seeded(v), back)
    assert "ports.keras layer names" in back.meta["source"]
    assert "bypass none and final_conv_padding 0 from the layer names" in back.meta["source"]


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.attrs.__delitem__("layer_names"), "no layer_names attribute: not a Keras"),
    (lambda f: f.attrs.__setitem__("layer_names", [1, 2]), "layer_names is not a string"),
    (lambda f: f.attrs.__setitem__("layer_names", b"conv1"), "is not a list of strings"),
    (lambda f: f.attrs.__setitem__("layer_names", [b"conv1", b"nothere"]),
     "layer nothere is listed in layer_names but has no group"),
    (lambda f: f.attrs.__setitem__("backend", b"theano"), "Theano backend"),
    (lambda f: f.attrs.__setitem__("layer_names", np.array(
        [b"x"] * (keras_legacy.MAX_LAYERS + 1), "S1")),
     "more than 10000 entries"),
    (lambda f: f.attrs.__setitem__("layer_names", [b"y" * 1001]), "longer than 1000"),
    (lambda f: f.attrs.__setitem__(keras_legacy.META_ATTR, "{"), "not valid JSON"),
    (lambda f: f.attrs.__setitem__("model_config", "{"), "model_config is not valid JSON"),
    (lambda f: f["conv10"].attrs.__setitem__("weight_names", [b"a", b"b", b"c"]),
     "layer conv10: 3 weights"),
    (lambda f: f["conv10"].attrs.__setitem__("weight_names", [b"conv10/kernel:0", b"nope:0"]),
     "layer conv10: no dataset nope:0"),
])
def test_legacy_h5_bad_structure(tmp_path, seeded, edit, match):
    path = tmp_path / "w.h5"
    formats.write(seeded(Variant("1_1", 10)), path)
    rewrite(path, edit)
    refuse(path, match)


def test_legacy_h5_wrong_layers_are_named(tmp_path, seeded):
    v = Variant("1_1", 10)
    path = tmp_path / "w.h5"
    formats.write(seeded(v), path)

    def add_dense(f):
        f.attrs["layer_names"] = [n.encode() for n in f.attrs["layer_names"]] + [b"fc",
                                                                                 b"conv_1"]
        g = f.create_group("fc")
        g.attrs["weight_names"] = [b"fc/kernel:0"]
        g["fc/kernel:0"] = np.zeros((2, 2), np.float32)
        g = f.create_group("conv_1")
        g.attrs["weight_names"] = [b"conv_1/kernel:0", b"conv_1/bias:0"]
    rewrite(path, add_dense)
    message = refuse(path, "layers with weights that are not SqueezeNet's: fc")
    assert "layers conv1 and conv_1 are both conv1" in message

    formats.write(seeded(v), path)
    rewrite(path, lambda f: drop_layer(f, "fire9_expand3x3"))
    refuse(path, "missing layer fire9.expand3x3")


def test_legacy_h5_notop_theano_shapes_and_dtypes(tmp_path, seeded):
    v = Variant("1_1")
    path = keras2_file(tmp_path, seeded(v))
    rewrite(path, lambda f: drop_layer(f, "conv10"))
    refuse(path, r"no conv10 layer: a file saved without the classifier \(include_top=False")

    path = keras2_file(tmp_path, seeded(v))

    def oihw(f):
        g = f["fire2/expand3x3"]
        kernel = g["fire2/expand3x3/kernel:0"][()]
        del g["fire2/expand3x3/kernel:0"]
        g["fire2/expand3x3/kernel:0"] = kernel.transpose(3, 2, 0, 1)
    rewrite(path, oihw)
    refuse(path, r"fire2/expand3x3: kernel has shape \[64, 16, 3, 3\], expected "
                 r"\[3, 3, 16, 64\] \(channels-first OIHW")

    path = keras2_file(tmp_path, seeded(v))

    def ints(f):
        g = f["conv10"]
        del g["conv10/bias:0"]
        g["conv10/bias:0"] = np.zeros(1000, np.int32)
    rewrite(path, ints)
    refuse(path, "layer conv10: bias has dtype int32, expected float16, float32 or float64")

    path = keras2_file(tmp_path, seeded(v))

    def huge(f):   # a declared shape, never allocated: refused before any read
        g = f["conv1"]
        del g["conv1/kernel:0"]
        g.create_dataset("conv1/kernel:0", shape=(3, 3, 3, 1 << 34), dtype=np.float32,
                         chunks=(1, 1, 1, 1 << 20))
    rewrite(path, huge)
    refuse(path, "cannot infer the variant from conv1 weight", variant=None)
    refuse(path, r"layer conv1: kernel has shape \[3, 3, 3, 17179869184\]", variant=v)


def test_legacy_h5_hints_for_the_other_keras_files(tmp_path, seeded):
    path = tmp_path / "new.h5"
    path.write_bytes(k3.encode(seeded(Variant("1_1", 10))))
    refuse(path, r"not a Keras HDF5 weights file \(this is a Keras 3 .weights.h5 file")
    path.write_bytes(b"\x89HDF\r\n" + b"\0" * 100)
    refuse(path, "not an HDF5 file")


def test_legacy_h5_whole_model_config_is_bounded(tmp_path, seeded):
    v = Variant("1_1", 10)
    path = keras2_file(tmp_path, seeded(v), config={"class_name": "Functional",
                                                    "config": {"layers": "x"}})
    refuse(path, "attribute model_config: no list of layers")
    inbound: list = ["x", 0, 0]
    for _ in range(kc.MAX_DEPTH + 10):
        inbound = [inbound]
    nested = {"class_name": "Functional", "config": {"layers": [
        {"class_name": "MaxPooling2D", "config": {"name": "p"}, "name": "p",
         "inbound_nodes": inbound}]}}
    path = keras2_file(tmp_path, seeded(v), config=nested)
    # the inbound nodes nest beyond MAX_DEPTH: walked no further, the file still reads
    assert "floor mode ('valid': p)" in formats.read(path).meta["source"]


def test_keras2_naming_has_no_bypass(seeded):
    with pytest.raises(ValueError, match="no bypass layers"):
        keras_legacy.encode(seeded(Variant("1_1", bypass="simple")), naming="keras2")


def test_files_convert_to_every_format_and_back(tmp_path, seeded):
    """A Keras 2 file, our .keras and our .h5 -> every format -> the same tensors."""
    v = Variant("1_1")
    sources = [keras2_file(tmp_path, seeded(v), config=keras2_config(v))]
    for ending in (".keras", ".h5"):
        sources.append(tmp_path / f"ours{ending}")
        formats.write(seeded(v), sources[-1])
    for k, src in enumerate(sources):
        w = formats.read(src)
        for name, fmt in formats.FORMATS.items():
            dst = tmp_path / f"out{k}-{name.replace('-', '_')}{fmt.extensions[0]}"
            try:
                formats.write(w, dst, name)
            except WeightsError as e:   # a format that cannot hold these numbers
                assert formats.FORMATS[name].codebook, e
                continue
            same_tensors(seeded(v), formats.read(dst, name, variant=v))
