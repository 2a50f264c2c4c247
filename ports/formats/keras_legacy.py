"""Keras HDF5 weights, the legacy layout (``.h5``): what Keras 2 / tf.keras ``save_weights``
and ``save`` write, and what Keras 3's ``model.load_weights("w.h5")`` reads; h5py only.

Keras sends every file named ``.h5`` (or ``.hdf5``) to this loader and only ``.weights.h5``
to its Keras 3 one (:mod:`ports.formats.keras`).  Layout, as tf_keras 2.21.0 writes it
(``model_weights/`` first in a whole-model file, whose root also holds ``model_config``)::

    attrs  layer_names   every layer of model.layers, in order (ASCII strings)
           backend       "tensorflow";  keras_version  "2.21.0"
    <layer>/             one group per layer (a name with ``/`` nests: fire2/squeeze1x1)
        attrs weight_names   ["conv1/kernel:0", "conv1/bias:0"] (empty: a weightless layer)
        conv1/kernel:0       kernel, float32 HWIO [kh, kw, in, out]
        conv1/bias:0         bias, float32 [out]
    top_level_model_weights/  (empty weight_names)

**Keras loads by order**: the n-th layer with weights in the file fills the n-th layer with
weights of the model (tf.keras and Keras 3 alike; ``by_name=True`` matches names instead).
:func:`write` writes every layer of ``ports.keras.SqueezeNet`` under its names
(:func:`ports.formats.keras.keras_layers`), so ``model.load_weights("w.h5")`` fills a
``ports.keras.SqueezeNet`` in Keras 3, and a tf.keras model built in the same order in tf_keras
(the conformance tests do both); the canonical metadata rides along as the root attribute
``squeezenet_ports.metadata``, which Keras ignores.

:func:`read` reads **by layer name**: ours (``conv1``, ``fire2_squeeze``, ``fire2_expand1x1``,
``fire2_expand3x3``, ``fire2_bypass``, ``conv10``), the widely used Keras 2 SqueezeNet v1.1
(keras_squeezenet: ``conv1``, ``fire2/squeeze1x1``, ``fire2/expand1x1``,
``fire2/expand3x3``, ..., ``conv10``), and the variants of those seen elsewhere
(``fire_2_squeeze1x1``, ``fire2_expand_1x1``, ...: see :func:`canonical_conv`).  Kernel and
bias are told apart by their weight names (``kernel``/``W``, ``bias``/``b``).  A file of
another SqueezeNet's weights records neither the pooling mode nor conv10's padding: what
the shapes prove (version, classes, complex bypass) is inferred, the rest comes from
``variant=`` (``tools/convert --variant``) or defaults to ``none`` / ``0``, and ``source``
says which.  A whole-model file's ``model_config`` is read for the max pools' rounding:
Keras' ``MaxPooling2D`` rounds down (``'valid'``, floor mode) where Caffe rounds up, so such
weights belong to a different network than Caffe's SqueezeNet, and ``source`` says so
(the converter prints it).  Theano-ordered files (channels-first, flipped kernels) are
refused.  HDF5 is parsed in a helper process (:mod:`ports.formats._sandbox`), as for ``keras``.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..layouts import hwio_to_oihw, oihw_to_hwio
from ..spec import Variant
from . import _hdf5
from . import canonical as C
from . import keras as K3
from . import keras_config as KC
from ._io import atomic_write
from ._library import dependency
from .canonical import Weights

NAME = "keras-h5"
KERAS_VERSION = "2.21.0"     # the tf_keras release whose save_weights layout is written
BACKEND = "tensorflow"
META_ATTR = K3.META_ATTR
MAX_LAYERS = 10_000          # names in layer_names
MAX_NAME = 1_000             # characters of a layer or weight name
MAX_CHUNKS = 1_000           # layer_names0, layer_names1, ... (attributes over 64 KB split)
_FLOATS = K3._FLOATS

# canonical role of a Fire convolution -> the patterns other Keras SqueezeNets name it by
_ROLES = {"squeeze": r"squeeze(?:_?1x1)?", "expand1x1": r"expand_?1(?:x1)?",
          "expand3x3": r"expand_?3(?:x3)?", "bypass": r"bypass(?:_?1x1)?"}
_FIRE = re.compile(r"fire_?(\d+)[/_.](" + "|".join(f"(?P<{k}>{v})" for k, v in _ROLES.items())
                   + r")")
_STEM = {"conv1": re.compile(r"conv_?1"), "conv10": re.compile(r"conv_?10|conv_final")}


def _h5py():
    return dependency("h5py", NAME)


def canonical_conv(name: str) -> str | None:
    """The canonical convolution a Keras layer name denotes, or None: ``conv1``/``conv_1``,
    ``conv10``/``conv_10``/``conv_final``; ``fire2_squeeze`` (ours), ``fire2/squeeze1x1``
    (Keras 2 SqueezeNet), ``fire_2_squeeze1x1``, ``fire2_expand1x1``, ``fire2/expand_3x3``,
    ``fire2_bypass``, ... (case-insensitive)."""
    lower = name.lower()
    for canonical, pattern in _STEM.items():
        if pattern.fullmatch(lower):
            return canonical
    m = _FIRE.fullmatch(lower)
    if m is None:
        return None
    role = next(k for k in _ROLES if m.group(k))
    return f"fire{int(m.group(1))}.{role}"


def keras2_layers(variant: Variant) -> list[K3.KerasLayer]:
    """``model.layers`` of the widely used Keras 2 SqueezeNet (keras_squeezenet's v1.1
    layout, any version): for :func:`encode` ``naming="keras2"``, whose files that model's
    ``load_weights`` reads (by order or by name).  No bypass: it has none."""
    if variant.bypass != "none":
        raise ValueError(f"the Keras 2 SqueezeNet naming has no bypass layers ({variant.id})")
    out = [K3.KerasLayer("input_1", "input_layer")]
    for layer in K3.keras_layers(variant)[1:]:
        if layer.canonical is not None:
            name = layer.canonical.replace(".", "/")
            name = re.sub(r"/(squeeze|expand1x1|expand3x3)$",
                          lambda m: "/" + {"squeeze": "squeeze1x1"}.get(m[1], m[1]), name)
            out.append(K3.KerasLayer(name, "conv2d", layer.canonical))
            if name.endswith("expand3x3"):
                fire = name.split("/")[0]
                out += [K3.KerasLayer(f"{fire}/relu_expand1x1", "activation"),
                        K3.KerasLayer(f"{fire}/relu_expand3x3", "activation")]
            elif name.endswith("squeeze1x1"):
                out.append(K3.KerasLayer(f"{name.split('/')[0]}/relu_squeeze1x1",
                                         "activation"))
        elif layer.kind == "concatenate":
            out.append(K3.KerasLayer(layer.name.replace("_concat", "/concat"), "concatenate"))
        elif layer.kind == "re_lu":
            out.append(K3.KerasLayer(f"relu_{'conv1' if layer.name == 'relu1' else 'conv10'}",
                                     "activation"))
        elif layer.kind == "exact_global_average_pooling2d":
            out += [K3.KerasLayer("global_average_pooling2d", "global_average_pooling2d"),
                    K3.KerasLayer("loss", "activation")]
        elif layer.kind == "ceil_max_pooling2d":   # Keras' MaxPooling2D there
            out.append(K3.KerasLayer(layer.name, "max_pooling2d"))
        else:  # dropout, conv10_pad (which the Keras 2 model lacks) keep our names
            out.append(layer)
    return out


# --- writing ---------------------------------------------------------------------------------
def _ascii(values: list[str]) -> np.ndarray:
    return np.array([v.encode("ascii") for v in values],
                    dtype=_h5py().string_dtype("ascii"))


def _weight_names(group, names: list[str]) -> None:
    if names:
        group.attrs["weight_names"] = _ascii(names)
    else:  # what Keras writes for a weightless layer
        group.attrs["weight_names"] = np.zeros(0, np.float64)


def encode(weights: Weights, *, naming: str = "ports", model_config: dict | None = None
           ) -> bytes:
    """The ``.h5`` file tf.keras ``save_weights`` would write for a ``ports.keras`` model
    holding ``weights`` (``naming="keras2"``: for the Keras 2 SqueezeNet), plus the
    metadata; ``model_config``: stored as the root attribute of a whole-model file (the
    weights then go under ``model_weights/``, as ``model.save`` puts them)."""
    h5py = _h5py()

    variant = weights.variant
    layers = K3.keras_layers(variant) if naming == "ports" else keras2_layers(variant)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs[META_ATTR] = json.dumps(dict(weights.meta))
        root = f
        if model_config is not None:
            f.attrs["backend"] = np.array(BACKEND.encode(), dtype=h5py.string_dtype("ascii"))
            f.attrs["keras_version"] = np.array(KERAS_VERSION.encode(),
                                                dtype=h5py.string_dtype("ascii"))
            f.attrs["model_config"] = np.array(json.dumps(model_config).encode(),
                                               dtype=h5py.string_dtype("ascii"))
            root = f.create_group("model_weights")
        root.attrs["layer_names"] = _ascii([layer.name for layer in layers])
        root.attrs["backend"] = np.array(BACKEND.encode(), dtype=h5py.string_dtype("ascii"))
        root.attrs["keras_version"] = np.array(KERAS_VERSION.encode(),
                                               dtype=h5py.string_dtype("ascii"))
        for layer in sorted(layers, key=lambda la: str(la.name)):  # as Keras: sorted by name
            group = root.create_group(layer.name)
            if layer.canonical is None:
                _weight_names(group, [])
                continue
            names = [f"{layer.name}/kernel:0", f"{layer.name}/bias:0"]
            _weight_names(group, names)
            kernel = weights.tensors[f"{layer.canonical}.weight"]
            group[names[0]] = oihw_to_hwio(np.asarray(kernel, np.float32))
            group[names[1]] = np.ascontiguousarray(weights.tensors[f"{layer.canonical}.bias"],
                                                   dtype=np.float32)
        _weight_names(root.create_group("top_level_model_weights"), [])
    return buf.getvalue()


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``weights`` as legacy Keras HDF5 weights (``model.load_weights("w.h5")``)."""
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


# --- reading ---------------------------------------------------------------------------------
def _text(value, what: str) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bytes, np.bytes_)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise WeightsError(f"{what} is not UTF-8 text") from None
    if not isinstance(value, str):
        raise WeightsError(f"{what} is not a string")
    return value


def _strings(group, name: str, what: str, *, limit: int) -> list[str] | None:
    """The string list attribute ``name`` of ``group`` (joined from ``name0``, ``name1``,
    ... when Keras split it), or None when absent."""
    attrs = group.attrs
    if name in attrs:
        parts = [attrs[name]]
    elif f"{name}0" in attrs:
        parts = []
        while f"{name}{len(parts)}" in attrs:
            if len(parts) >= MAX_CHUNKS:
                raise WeightsError(f"{what}: more than {MAX_CHUNKS} chunks")
            parts.append(attrs[f"{name}{len(parts)}"])
    else:
        return None
    out: list[str] = []
    for part in parts:
        values = np.asarray(part)
        if values.ndim != 1 or (values.size == 0 and values.dtype.kind == "f"):
            if values.size == 0:
                continue
            raise WeightsError(f"{what} is not a list of strings")
        if len(out) + values.size > limit:
            raise WeightsError(f"{what} has more than {limit} entries")
        for value in values:
            text = _text(value, what)
            if not text or len(text) > MAX_NAME:
                raise WeightsError(f"{what}: a name that is empty or longer than {MAX_NAME} "
                                   "characters")
            out.append(text)
    return out


def _graph(f) -> list[KC.ConfigLayer] | KC.ModelConfig | None:
    """A whole-model file's ``model_config``: its layers (a functional model, any naming),
    or what a ``ports.keras.SqueezeNet``'s config says (its variant; no graph); None
    without one."""
    if "model_config" not in f.attrs:
        return None
    what = "attribute model_config"
    config = KC.parse_json(_text(f.attrs["model_config"], what), what)
    if isinstance(config, dict) and KC.is_ports_form(config):
        return KC.read_config(config, what)   # which refuses what is foreign first
    KC.refuse_foreign(config, what)
    return KC.graph_layers(config, what)


class _Layer:
    """A layer with weights: its name, group and weight names."""

    def __init__(self, name: str, group, weight_names: list[str]) -> None:
        self.name, self.group, self.weight_names = name, group, weight_names

    def weight(self, which: str):
        """The dataset of the kernel or the bias (by weight name, else by position)."""
        h5py = _h5py()

        suffixes = {"kernel": ("kernel", "w"), "bias": ("bias", "b")}[which]
        named = [n for n in self.weight_names
                 if re.split(r"[/_]", n.split(":")[0])[-1].lower() in suffixes]
        if len(named) != 1:
            if len(self.weight_names) != 2:
                return None, (f"layer {self.name}: {len(self.weight_names)} weights "
                              f"({', '.join(self.weight_names[:4])}), expected a kernel and "
                              "a bias")
            named = [self.weight_names[0 if which == "kernel" else 1]]
        try:
            ds = self.group.get(named[0])
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            return None, f"layer {self.name}: weight {named[0]}: {e}"[:300]
        if not isinstance(ds, h5py.Dataset):
            return None, f"layer {self.name}: no dataset {named[0]}"
        return ds, None


def _naming(layers: dict[str, _Layer]) -> str:
    names = [layer.name for layer in layers.values()]
    if all(K3.layer_name(c) == n for c, n in zip(layers, names)):
        return "ports.keras layer names"
    if any("/squeeze1x1" in n for n in names):
        return "the Keras 2 SqueezeNet's layer names (fireN/squeeze1x1, ...)"
    return "layer names " + ", ".join(names[:3]) + ", ..."


def _infer(layers: dict[str, _Layer], listed: set[str], graph) -> tuple[Variant, str]:
    """Variant from the shapes, the layer names and a whole-model file's config; returns it
    and how it was found.  A file listing ``ports.keras``'s weightless layers
    (``fireN_concat``) records a simple bypass (``fireN_add``) and conv10's padding
    (``conv10_pad``) by name; a model config records them as layers (``Add``, a
    ``ZeroPadding2D`` before conv10); otherwise they are assumed none and 0."""
    def shape(canonical):
        layer = layers.get(canonical)
        ds = None if layer is None else layer.weight("kernel")[0]
        return None if ds is None else tuple(ds.shape)

    if "conv10" not in layers and "conv1" in layers:
        raise WeightsError("no conv10 layer: a file saved without the classifier "
                           "(include_top=False, "
                           "'notop') holds only the features, not a whole SqueezeNet")
    ours = any(re.fullmatch(r"fire\d+_concat", n) for n in listed)
    conv10_pad = "conv10_pad" in listed
    simple = any(re.fullmatch(r"fire\d+_add", n) for n in listed)
    if isinstance(graph, KC.ModelConfig):  # ports.keras.SqueezeNet: the config names it
        conv10_pad = graph.variant.final_conv_padding == 1
        simple = graph.variant.bypass == "simple"
    elif graph is not None:
        by_name = {la.name: la for la in graph}
        conv10 = next((la for la in graph if canonical_conv(la.name) == "conv10"), None)
        before = by_name.get(conv10.inbound[0]) if conv10 and len(conv10.inbound) == 1 else None
        conv10_pad = conv10_pad or (before is not None and before.cls == "ZeroPadding2D")
        simple = simple or any(la.cls == "Add" for la in graph)
    bypass = ("complex" if any(c.endswith(".bypass") for c in layers) else
              "simple" if simple else "none")
    variant = C.infer_variant(shape("conv1"), shape("conv10"),
                              names=("layer conv1's kernel", "layer conv10's kernel"),
                              layout="HWIO", bypass=bypass,
                              final_conv_padding=1 if conv10_pad else 0)
    how = "version and classes from the shapes"
    if bypass == "complex":
        how += ", complex bypass from its convolutions"
    if ours or graph is not None:
        recorded = "the layer names" if ours else "the model config"
        how += f", bypass {bypass} and final_conv_padding {variant.final_conv_padding} from " \
               f"{recorded}"
    elif bypass == "complex":
        how += ", final_conv_padding 0 assumed (not recorded; else pass --variant)"
    else:
        how += (", bypass none and final_conv_padding 0 assumed (not recorded: a simple bypass "
                "and conv10's padding have no weights; else pass --variant)")
    return variant, how


def from_h5(f, *, variant: Variant | None = None) -> Weights:
    """Canonical weights from an open legacy Keras HDF5 ``h5py.File``."""
    h5py = _h5py()

    root = f
    if "layer_names" not in f.attrs and "layer_names0" not in f.attrs and "model_weights" in f:
        root = f["model_weights"]
        if not isinstance(root, h5py.Group):
            raise WeightsError("model_weights is not a group")
    listed = _strings(root, "layer_names", "attribute layer_names", limit=MAX_LAYERS)
    if listed is None:
        hint = (" (this is a Keras 3 .weights.h5 file: name it .weights.h5, format keras)"
                if "layers" in f and "vars" in f else "")
        raise WeightsError("no layer_names attribute: not a Keras HDF5 weights file" + hint)
    backend = _text(root.attrs["backend"], "attribute backend") \
        if "backend" in root.attrs else None
    version = _text(root.attrs["keras_version"], "attribute keras_version") \
        if "keras_version" in root.attrs else None
    if backend == "theano":
        raise WeightsError("saved with the Theano backend (channels-first, flipped kernels): not "
                           "supported; load it in Keras and save it with TensorFlow")
    meta = {} if META_ATTR not in f.attrs else C.string_meta(
        f.attrs[META_ATTR], f"attribute {META_ATTR}", limit=K3.MAX_META)
    graph = _graph(f)

    layers: dict[str, _Layer] = {}
    problems, unknown = [], []
    for name in listed:
        try:
            group = root.get(name)
        except (ValueError, KeyError, OSError, RuntimeError) as e:
            raise WeightsError(f"layer {name[:100]}: {e}"[:300]) from None
        if not isinstance(group, h5py.Group):
            raise WeightsError(f"layer {name[:100]} is listed in layer_names but has no group")
        weight_names = _strings(group, "weight_names", f"layer {name[:100]}: weight_names",
                                limit=64) or []
        if not weight_names:
            continue
        canonical = canonical_conv(name)
        if canonical is None:
            unknown.append(name)
        elif canonical in layers:
            problems.append(f"layers {layers[canonical].name} and {name} are both "
                            f"{canonical}")
        else:
            layers[canonical] = _Layer(name, group, weight_names)
    if variant is not None:
        chosen, how = variant, f"architecture {variant.id} given by the caller"
    elif C.has_architecture(meta):
        chosen, how = C.meta_variant(meta), "from the file's metadata"
    else:
        chosen, how = _infer(layers, set(listed), graph)

    specs = chosen.params()
    expected = [c.name for c in chosen.convs()]
    problems += C.key_problems(list(layers), expected, noun=("layer", "layers"), colon=False,
                               label=lambda c: layers[c].name if c in layers else c)
    if unknown:
        problems.append(f"layers with weights that are not SqueezeNet's: "
                        f"{', '.join(n[:100] for n in unknown[:20])}")
    datasets = {}
    for canonical in expected:
        layer = layers.get(canonical)
        if layer is None:
            continue
        o, i, kh, kw = specs[f"{canonical}.weight"]
        for which, shape in (("kernel", (kh, kw, i, o)), ("bias", (o,))):
            ds, problem = layer.weight(which)
            if problem is None and tuple(ds.shape) != shape:
                problem = (f"layer {layer.name}: {which} has shape {list(ds.shape)}, expected "
                           f"{list(shape)}")
                if which == "kernel" and tuple(ds.shape) == (o, i, kh, kw) and kh != i:
                    problem += " (channels-first OIHW, as a Theano-ordered file: not supported)"
            elif problem is None and ds.dtype not in _FLOATS:
                problem = (f"layer {layer.name}: {which} has dtype {ds.dtype}, expected "
                           "float16, float32 or float64")
            if problem:
                problems.append(problem)
            datasets[(canonical, which)] = ds
    if problems:
        raise WeightsError(f"does not match SqueezeNet {chosen.id} ({how}): "
                           + "; ".join(problems))
    tensors = {}
    for canonical in expected:
        tensors[f"{canonical}.weight"] = hwio_to_oihw(_hdf5.array(datasets[(canonical, "kernel")]))
        tensors[f"{canonical}.bias"] = _hdf5.array(datasets[(canonical, "bias")])
    if not C.has_architecture(meta):
        kind = "whole-model file" if graph is not None else "weights file"
        saved = ", ".join(filter(None, [f"Keras {version}" if version else "",
                                        f"backend {backend}" if backend else ""]))
        notes = [f"keras .h5 {kind} ({saved or 'no version recorded'}; "
                 f"{_naming(layers)}) without metadata", how]
        if graph is not None:
            pools = graph.pools if isinstance(graph, KC.ModelConfig) else KC.pooling(graph)
            note = KC.floor_note(chosen, pools)
            notes.append(note if note else "max pools in ceil mode")
        else:
            note = "pooling mode not recorded (weights only)"
            if any("/squeeze1x1" in layer.name for layer in layers.values()):
                note += ("; the Keras 2 SqueezeNet these layer names come from pools in floor "
                         "mode ('valid'), which differs from Caffe's ceil mode (e.g. v1.1 at "
                         "227x227)")
            notes.append(note)
        meta = {**meta, **chosen.to_meta()}
        meta.setdefault("preprocessing", "none")
        meta.setdefault("source", "; ".join(notes))
    return Weights(tensors, meta)


# HDF5 in the helper process, as ports.formats.keras does (see there).
def _read_in_process(source: str | None, variant: str | None,
                     data: bytes | None = None) -> tuple[dict, dict]:
    weights = _hdf5.opened(source, data, lambda f: from_h5(
        f, variant=Variant.from_id(variant) if variant else None), NAME)
    return weights.tensors, weights.meta


def _read(source: str | None, data: bytes | None, size: int, *,
          variant: Variant | None) -> Weights:
    from ._sandbox import SandboxError, isolated

    try:
        tensors, meta = isolated(_read_in_process, source, variant.id if variant else None,
                                 data=data, memory_bytes=K3.SANDBOX_MEMORY + 16 * size,
                                 seconds=K3.SANDBOX_SECONDS + size / 50e6, preload=("h5py",))
    except SandboxError as e:  # the reader's own message, or why it died
        raise WeightsError(e.reason) from None
    return Weights(tensors, meta)


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    return _read(None, bytes(blob), len(blob), variant=variant)


def read(path, *, variant: Variant | None = None) -> Weights:
    return _read(os.path.abspath(path), None, os.path.getsize(path), variant=variant)
