"""Keras 3 ``.weights.h5`` for the ``ports.keras`` model, read and written with h5py only.

Layout that Keras 3 (checked on 3.15.1) writes with ``model.save_weights("w.weights.h5")``
for a functional model, reproduced exactly by :func:`write`::

    /vars                            group, attrs {"name": <model name>}, no members
    /layers/<kind>[_<k>]/vars        group, attrs {"name": <layer name>}, one per layer,
                                     weightless layers included (empty group)
    /layers/conv2d_<k>/vars/0        kernel, float32 HWIO [kh, kw, in, out]
    /layers/conv2d_<k>/vars/1        bias, float32 [out]

``<kind>`` is the snake_case of the layer's class (``input_layer``, ``conv2d``, ``re_lu``,
``ceil_max_pooling2d``, ``concatenate``, ``add``, ``dropout``, ``zero_padding2d``,
``exact_global_average_pooling2d``) and ``_<k>`` its ordinal among layers of that class in
``model.layers`` order (the first has no suffix).  **Keras loads by these paths, not by
layer name**: :func:`keras_layers` is the ``model.layers`` order of ``ports.keras``, and
the conformance tests check it against real Keras for every variant.

Layer names (Keras names cannot contain ``/``): a canonical convolution ``fire2.squeeze``
is the layer ``fire2_squeeze`` (``.`` -> ``_``); ``conv1``, ``relu1``, ``pool1`` ...
``drop9``, ``conv10``, ``relu10``, ``pool10`` keep their spec names; each Fire module adds
``fireN_concat`` and, with a bypass, ``fireN_add`` (and ``fireN_bypass``, the complex
bypass conv); ``final_conv_padding=1`` adds ``conv10_pad`` (a ``ZeroPadding2D``).
:func:`key_table` maps canonical parameter names to dataset paths.

Metadata: the canonical metadata is stored as one extra root attribute,
``squeezenet_ports.metadata`` (a JSON object of strings), which Keras ignores.  A file saved
by real Keras has none; the architecture is then, in order of preference:

1. ``read(..., variant=...)`` when given (checked against the file's layer set);
2. inferred from the layer names Keras records (every layer, weightless ones included):
   version from ``conv1``'s kernel, ``num_classes`` from ``conv10``'s kernel, complex bypass
   from ``fireN_bypass``, simple from ``fireN_add`` and ``final_conv_padding=1`` from
   ``conv10_pad`` -- exact for files saved from a ``ports.keras`` model;
3. for files without layer names (Keras 3 versions before the ``name`` attribute), from
   the shapes alone: version, ``num_classes`` and complex bypass are exact, but "simple"
   (no parameters) cannot be told from "none" nor conv10 padding 1 from 0: they default
   to ``"none"`` and ``0`` and ``source`` says so -- pass ``variant=`` for anything else.

``preprocessing`` is then ``"none"`` (unknown) and ``source`` names how the architecture
was found.  A file whose layers do not match the architecture (a missing or unexpected
layer, a wrong shape) raises :class:`ports.errors.WeightsError` naming the layer; shapes are
checked before any data is read.  float16/float64 datasets are accepted and rounded to
float32 (canonical); float32 ones convert bit-exact.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..layouts import hwio_to_oihw, oihw_to_hwio
from ..spec import Variant
from . import _hdf5
from . import canonical as C
from ._io import atomic_write
from ._library import dependency
from .canonical import Weights

NAME = "keras"
META_ATTR = "squeezenet_ports.metadata"
MAX_LAYERS = 10_000          # groups under /layers before we give up on a file
MAX_META = 1 << 20           # bytes of the metadata attribute
_FLOATS = (np.dtype("<f2"), np.dtype("<f4"), np.dtype("<f8"),
           np.dtype(">f2"), np.dtype(">f4"), np.dtype(">f8"))


def _h5py():
    return dependency("h5py", NAME)


@dataclass(frozen=True)
class KerasLayer:
    """One layer of the ``ports.keras`` model: Keras ``name``, ``kind`` (snake_case class
    name, the file's group prefix) and the canonical convolution it holds, if any."""

    name: str
    kind: str
    canonical: str | None = None


def layer_name(canonical: str) -> str:
    """Keras layer name of a canonical layer name: ``fire2.squeeze`` -> ``fire2_squeeze``."""
    return canonical.replace(".", "_")


def model_name(variant: Variant) -> str:
    """Name of the Keras model, e.g. ``squeezenet_1_0_p1_none``."""
    return "squeezenet_" + variant.id.replace("-", "_")


def _conv_layers(c: S.Conv) -> list[KerasLayer]:
    name = layer_name(c.name)
    pad = [] if c.padding == 0 or (c.stride == 1 and 2 * c.padding == c.kernel - 1) else \
        [KerasLayer(f"{name}_pad", "zero_padding2d")]
    return pad + [KerasLayer(name, "conv2d", c.name)]


def keras_layers(variant: Variant) -> list[KerasLayer]:
    """``model.layers`` of ``ports.keras.SqueezeNet`` for ``variant``, in order."""
    out = [KerasLayer("input", "input_layer")]
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            out += _conv_layers(layer)
        elif isinstance(layer, S.ReLU):
            out.append(KerasLayer(layer.name, "re_lu"))
        elif isinstance(layer, S.MaxPool):
            out.append(KerasLayer(layer.name,
                                  "ceil_max_pooling2d" if layer.ceil_mode else "max_pooling2d"))
        elif isinstance(layer, S.Fire):
            for conv in (layer.squeeze, layer.expand1x1, layer.expand3x3):
                out += _conv_layers(conv)
            out.append(KerasLayer(f"{layer.name}_concat", "concatenate"))
            if layer.bypass_conv is not None:
                out += _conv_layers(layer.bypass_conv)
            if layer.bypass is not None:
                out.append(KerasLayer(f"{layer.name}_add", "add"))
        elif isinstance(layer, S.Dropout):
            out.append(KerasLayer(layer.name, "dropout"))
        elif isinstance(layer, S.GlobalAvgPool):
            out.append(KerasLayer(layer.name, "exact_global_average_pooling2d"))
        else:  # pragma: no cover - the spec has no other layer kinds
            raise TypeError(f"unknown layer {layer!r}")
    return out


def model_layers(variant: Variant, layers: Sequence[tuple[str, str]] | None = None
                 ) -> list[KerasLayer]:
    """``model.layers`` of a model for ``variant``: ``ports.keras``'s (:func:`keras_layers`),
    or ``layers`` -- ``(name, kind)`` in order, of another model with the same layer names
    (a ``.keras`` file's graph) -- with each convolution's canonical name filled in."""
    if layers is None:
        return keras_layers(variant)
    convs = {name: canonical for canonical, name in conv_layer_names(variant).items()}
    return [KerasLayer(name, kind, convs.get(name)) for name, kind in layers]


def layer_paths(variant: Variant, layers: Sequence[tuple[str, str]] | None = None
                ) -> dict[str, str]:
    """Keras layer name -> its group in the file (``layers/conv2d_3``); ``layers``: as
    :func:`model_layers`."""
    seen: dict[str, int] = {}
    paths = {}
    for layer in model_layers(variant, layers):
        k = seen.get(layer.kind, -1) + 1
        seen[layer.kind] = k
        paths[layer.name] = f"layers/{layer.kind}" + (f"_{k}" if k else "")
    return paths


def conv_layer_names(variant: Variant) -> dict[str, str]:
    """Canonical convolution name -> Keras layer name, in spec order."""
    return {c.name: layer_name(c.name) for c in variant.convs()}


def key_table(variant: Variant) -> dict[str, str]:
    """Canonical parameter name -> dataset path (``fire2.squeeze.weight`` ->
    ``layers/conv2d_1/vars/0``; ``.bias`` -> ``.../vars/1``)."""
    paths = layer_paths(variant)
    table = {}
    for canonical, name in conv_layer_names(variant).items():
        table[f"{canonical}.weight"] = f"{paths[name]}/vars/0"
        table[f"{canonical}.bias"] = f"{paths[name]}/vars/1"
    return table


# --- writing ---------------------------------------------------------------------------------
def encode(weights: Weights, layers: Sequence[tuple[str, str]] | None = None) -> bytes:
    """The ``.weights.h5`` file Keras would save for ``weights`` (plus the metadata) from a
    ``ports.keras`` model, or from the model whose ``model.layers`` are ``layers`` (as
    :func:`model_layers`)."""
    h5py = _h5py()

    variant = weights.variant
    paths = layer_paths(variant, layers)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        f.attrs[META_ATTR] = json.dumps(dict(weights.meta))  # key order kept
        f.create_group("vars").attrs["name"] = model_name(variant)
        for layer in model_layers(variant, layers):
            group = f.create_group(paths[layer.name]).create_group("vars")
            group.attrs["name"] = layer.name
            if layer.canonical is not None:
                kernel = weights.tensors[f"{layer.canonical}.weight"]
                group["0"] = oihw_to_hwio(np.asarray(kernel, np.float32))
                group["1"] = np.ascontiguousarray(weights.tensors[f"{layer.canonical}.bias"],
                                                  dtype=np.float32)
    return buf.getvalue()


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``weights`` as a Keras 3 weights file (Keras itself wants ``.weights.h5``)."""
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


# --- reading ---------------------------------------------------------------------------------
def _text(value) -> str | None:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) else None


class _File:
    """The layer groups of an open file: by recorded layer name when every group has one,
    else by path only."""

    def __init__(self, f) -> None:
        h5py = _h5py()

        self.f = f
        layers = f.get("layers")
        if not isinstance(layers, h5py.Group):
            hint = (" (this looks like a Keras 2 / tf.keras HDF5 file: read it as format "
                    "keras-h5, the format of a file named .h5)"
                    if "layer_names" in f.attrs or "model_weights" in f else "")
            raise WeightsError("no 'layers' group: not a Keras 3 .weights.h5 file" + hint)
        if len(layers) > MAX_LAYERS:
            raise WeightsError(f"{len(layers)} layer groups, more than {MAX_LAYERS}")
        self.paths: dict[str, str | None] = {}   # group path -> recorded layer name
        for key in layers:
            group = layers.get(key)
            vars_ = group.get("vars") if isinstance(group, h5py.Group) else None
            if not isinstance(vars_, h5py.Group):
                raise WeightsError(f"layers/{key}: expected a group holding a 'vars' group")
            self.paths[f"layers/{key}"] = _text(vars_.attrs.get("name"))
        names = [n for n in self.paths.values() if n is not None]
        self.named = bool(self.paths) and len(names) == len(self.paths)
        if self.named and len(set(names)) != len(names):
            dup = sorted({str(n) for n in names if names.count(n) > 1})
            raise WeightsError(f"layer name(s) recorded twice: {', '.join(dup)}")
        self.by_name = {n: p for p, n in self.paths.items()} if self.named else {}

    def vars_of(self, name: str, path: str):
        """The ``vars`` group of layer ``name`` (``path``: where ``ports.keras`` puts it)."""
        if self.named:
            path = self.by_name.get(name)
        if path is None or path not in self.paths:
            return None
        return self.f[path]["vars"]

    def dataset(self, name: str, path: str, index: str, shape: tuple[int, ...]):
        """Dataset ``index`` of layer ``name``, shape and dtype checked (nothing read).
        Returns ``(dataset, None)`` or ``(None, problem)``."""
        h5py = _h5py()

        vars_ = self.vars_of(name, path)
        if vars_ is None:
            return None, f"layer {name} is missing"
        ds = vars_.get(index)
        if not isinstance(ds, h5py.Dataset):
            return None, (f"layer {name}: no variable {index} "
                          f"(has {sorted(map(str, vars_.keys())) or 'none'})")
        if tuple(ds.shape) != tuple(shape):
            what = "kernel" if index == "0" else "bias"
            return None, (f"layer {name}: {what} has shape {list(ds.shape)}, expected "
                          f"{list(shape)}")
        if ds.dtype not in _FLOATS:
            kind = _text(ds.attrs.get("dtype")) or str(ds.dtype)
            return None, (f"layer {name}: variable {index} has dtype {kind}, expected "
                          "float16, float32 or float64")
        if len(vars_) != 2:
            return None, (f"layer {name}: expected variables 0 and 1, found "
                          f"{sorted(map(str, vars_))}")
        return ds, None


def _meta(f) -> dict[str, str]:
    raw = f.attrs.get(META_ATTR)
    return {} if raw is None else C.string_meta(raw, f"attribute {META_ATTR}", limit=MAX_META)


def _shape_of(file: _File, name: str, path: str, index: str) -> tuple[int, ...] | None:
    vars_ = file.vars_of(name, path)
    ds = None if vars_ is None else vars_.get(index)
    return None if ds is None or not hasattr(ds, "shape") else tuple(ds.shape)


def infer_variant(file: _File) -> tuple[Variant, str]:
    """Architecture from the layer names and shapes; returns (variant, how)."""
    names = ("layer conv1's kernel", "layer conv10's kernel")
    conv1 = _shape_of(file, "conv1", layer_paths(Variant("1_1"))["conv1"], "0")
    version = C.version_of(conv1, name=names[0], layout="HWIO")
    if file.named:
        present = set(file.by_name)
        bypass = ("complex" if "fire2_bypass" in present else
                  "simple" if "fire3_add" in present else "none")
        padding = 1 if "conv10_pad" in present else 0
        how = "inferred from the layer names and shapes"
    else:
        complex_paths = layer_paths(Variant(version, bypass="complex"))
        bypass = "complex" if complex_paths["conv10"] in file.paths else "none"
        padding = 0
        how = ("inferred from the shapes (the file records no layer names, so bypass "
               "'simple' and final_conv_padding=1 cannot be told apart: assumed none and 0)")
    conv10 = _shape_of(file, "conv10", layer_paths(Variant(version, 1000, padding, bypass))
                       ["conv10"], "0")
    return C.infer_variant(conv1, conv10, names=names, layout="HWIO", bypass=bypass,
                           final_conv_padding=padding), how


def _layer_set_problems(file: _File, variant: Variant,
                        graph: Sequence[tuple[str, str]] | None = None
                        ) -> tuple[list[str], set[str]]:
    """Every layer of ``variant`` present and nothing else (by name when recorded); returns
    the problems and the missing layers."""
    layers = model_layers(variant, graph)
    if file.named:
        expected = [layer.name for layer in layers]
        found, label = list(file.by_name), str
    else:  # only the convolutions' groups can be told apart
        paths = layer_paths(variant, graph)
        by_path = {paths[layer.name]: layer.name for layer in layers if layer.canonical}
        expected = list(by_path)
        found = [p for p in file.paths if p.startswith("layers/conv2d")]
        label = lambda p: by_path.get(p, p)  # noqa: E731
    problems = C.key_problems(found, expected, noun=("layer", "layers"), colon=False,
                              label=label)
    return problems, {label(k) for k in expected if k not in set(found)}


def from_h5(f, *, variant: Variant | None = None,
            layers: Sequence[tuple[str, str]] | None = None,
            what: str = "keras .weights.h5") -> Weights:
    """Canonical weights from an open ``h5py.File``: saved from a ``ports.keras`` model, or
    from the model whose ``model.layers`` are ``layers`` (as :func:`model_layers`: the
    graph of a ``.keras`` file).  ``what`` names the file kind in the ``source`` metadata of
    a file without metadata."""
    meta = _meta(f)
    file = _File(f)
    if variant is not None:
        chosen, how = variant, f"architecture {variant.id} given by the caller"
    elif C.has_architecture(meta):
        chosen, how = C.meta_variant(meta), "from the file's metadata"
    else:
        chosen, how = infer_variant(file)
    set_problems, missing = _layer_set_problems(file, chosen, layers)
    paths = layer_paths(chosen, layers)
    specs = chosen.params()
    datasets, problems = {}, []
    for canonical, name in conv_layer_names(chosen).items():  # all shapes before any data
        if name in missing:
            continue
        weight_shape = specs[f"{canonical}.weight"]
        hwio = (weight_shape[2], weight_shape[3], weight_shape[1], weight_shape[0])
        kernel, problem = file.dataset(name, paths[name], "0", hwio)
        bias, problem2 = file.dataset(name, paths[name], "1", specs[f"{canonical}.bias"])
        problems += [p for p in (problem, problem2) if p]
        datasets[canonical] = (kernel, bias)
    problems += set_problems
    if problems:
        raise WeightsError(f"does not match SqueezeNet {chosen.id} ({how}): "
                           + "; ".join(problems))
    tensors = {}
    for canonical, (kernel, bias) in datasets.items():
        tensors[f"{canonical}.weight"] = hwio_to_oihw(_hdf5.array(kernel))
        tensors[f"{canonical}.bias"] = _hdf5.array(bias)
    if not C.has_architecture(meta):
        meta = {**meta, **chosen.to_meta()}
        meta.setdefault("preprocessing", "none")
        meta.setdefault("source", f"{what} without metadata; {how}")
    return Weights(tensors, meta)


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    return _read(None, bytes(blob), len(blob), variant=variant)


# HDF5 is parsed by a C library that can crash, hang or allocate without bound on a crafted
# file, beyond what any ``except`` catches: untrusted files are read in a helper process
# with a memory cap and a deadline (ports.formats._sandbox; never a fork of this process, which may
# be running TensorFlow or JAX thread pools).  A real file reads in well under a second.
SANDBOX_MEMORY = 128 << 20   # bytes beyond the helper's address space, plus 16x the file
SANDBOX_SECONDS = 3.0        # plus 1 s per 50 MB of file


def _read_in_process(source: str | None, variant: str | None,
                     data: bytes | None = None) -> tuple[dict, dict]:
    """What the helper runs: the file ``source`` (or the bytes ``data``) -> (tensors, meta)."""
    weights = _hdf5.opened(source, data, lambda f: from_h5(
        f, variant=Variant.from_id(variant) if variant else None), NAME)
    return weights.tensors, weights.meta


def _read(source: str | None, data: bytes | None, size: int, *,
          variant: Variant | None) -> Weights:
    from ._sandbox import SandboxError, isolated

    try:
        tensors, meta = isolated(_read_in_process, source, variant.id if variant else None,
                                 data=data, memory_bytes=SANDBOX_MEMORY + 16 * size,
                                 seconds=SANDBOX_SECONDS + size / 50e6, preload=("h5py",))
    except SandboxError as e:  # the reader's own message, or why it died
        raise WeightsError(e.reason) from None
    return Weights(tensors, meta)


def read(path, *, variant: Variant | None = None) -> Weights:
    return _read(os.path.abspath(path), None, os.path.getsize(path), variant=variant)
