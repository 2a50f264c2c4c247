"""Flax NNX state as msgpack (``.msgpack``), read and written without JAX or Flax.

The file is exactly what ``flax.serialization.msgpack_serialize(state)`` writes for the
pure nested dict of a :class:`ports.flax.SqueezeNet`'s NNX state
(``nnx.state(model).to_pure_dict()``), plus one top-level ``__metadata__`` entry::

    {"__metadata__": {"variant": "1_1", "num_classes": "1000", ...},   # str -> str
     "conv1":  {"bias": ARRAY, "kernel": ARRAY},
     "conv10": {"bias": ARRAY, "kernel": ARRAY},
     "fire2":  {"expand1x1": {...}, "expand3x3": {...}, "squeeze": {...}},
     ...}

Keys are written sorted at every level, as NNX orders its state, so without the
``__metadata__`` entry the bytes equal Flax's own ``msgpack_serialize`` output.

How Flax encodes an array (``flax/serialization.py``): msgpack ext type **1** whose payload
is itself msgpack, ``[shape, dtype_name, data]`` (``shape`` an array of ints, ``dtype_name``
a string such as ``"float32"``, ``data`` the C-order bytes in the writer's native order,
little-endian on every platform Flax runs on).  Arrays above 2**30 bytes are split by Flax
into ``{"__msgpack_chunked_array__": True, "shape": {"0": d0, ...}, "chunks": {"0": ARRAY,
...}}`` (flat 1-D pieces); this codec reads and writes that form too (a conv10 with very many
classes can reach it).

Key paths (canonical name -> Flax state path), for every convolution ``C`` of the spec::

    C.weight  ->  C'/kernel   HWIO [kh, kw, in, out]   (ports.layouts.oihw_to_hwio)
    C.bias    ->  C'/bias     [out]

where ``C'`` is the canonical conv name with ``.`` replaced by ``/``: ``conv1``,
``fire2/squeeze``, ``fire2/expand1x1``, ``fire2/expand3x3``, ``fire2/bypass`` (complex bypass
only), ..., ``conv10``.  E.g. ``fire2.squeeze.weight`` <-> ``fire2/squeeze/kernel``.

Restoring in real Flax (the ``__metadata__`` entry is not part of the model state)::

    state = flax.serialization.msgpack_restore(open(path, "rb").read())
    meta = state.pop("__metadata__", None)
    nnx.update(model, state)        # model: ports.flax.SqueezeNet of the same variant

Metadata: the canonical metadata (see :mod:`ports.formats.canonical`) is stored in
``__metadata__``.  A file without it (e.g. saved by Flax itself) gets its architecture from
``read(..., variant=...)`` when given, otherwise inferred from the shapes: ``version`` from
``conv1/kernel``, ``num_classes`` from ``conv10/kernel``, ``bypass="complex"`` when
``fireN/bypass`` kernels are present.  Two fields cannot be seen in the shapes and then take
their defaults: ``final_conv_padding`` (conv10 is 1x1, so pad 0 and pad 1 have identical
parameters: Caffe's v1.0 uses 1, **pass ``variant=`` for it**) = 0, and ``bypass`` "simple"
(which has no parameters) vs "none" = "none".  ``preprocessing`` is then recorded as
``"none"`` (unknown: the caller supplies model inputs) and ``source`` says it was inferred.

Every array is checked (dtype name, shape, payload length against the shape) before any
memory is allocated for it; every problem raises :class:`ports.errors.WeightsError` naming
the Flax key path.  Accepted stored dtypes: float32 (canonical), float64, float16 and
bfloat16, converted to float32.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..layouts import hwio_to_oihw, oihw_shape_to_hwio, oihw_to_hwio
from ..spec import Variant
from ._io import atomic_write
from ._library import dependency
from .canonical import (
    Weights,
    has_architecture,
    infer_variant,
    key_problems,
    meta_variant,
    string_meta,
    widen_bfloat16,
)

NAME = "flax"

METADATA_KEY = "__metadata__"
CHUNKED_KEY = "__msgpack_chunked_array__"
EXT_NDARRAY = 1             # flax.serialization._MsgpackExtType.ndarray
MAX_CHUNK_SIZE = 2 ** 30    # flax.serialization.MAX_CHUNK_SIZE: larger arrays are chunked
MAX_NDIM = 8
MAX_DEPTH = 16           # SqueezeNet needs 3 levels of maps (fire2/squeeze/kernel)
_DTYPES = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),   # the upper half of a float32, widened below
}

__all__ = ["NAME", "key_table", "to_state", "from_state", "encode", "decode", "read",
           "write"]


# --- the key table --------------------------------------------------------------------------
def key_table(variant: Variant) -> dict[str, str]:
    """Canonical name -> Flax state path (``/``-joined), for every parameter of ``variant``."""
    table: dict[str, str] = {}
    for conv in variant.convs():
        base = conv.name.replace(".", "/")
        table[f"{conv.name}.weight"] = f"{base}/kernel"
        table[f"{conv.name}.bias"] = f"{base}/bias"
    return table


def _flax_shape(canonical: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a canonical tensor has in the Flax state (kernels HWIO)."""
    return oihw_shape_to_hwio(shape) if canonical.endswith(".weight") else shape


def to_state(weights: Weights, dtype=np.float32) -> dict[str, Any]:
    """Canonical weights -> the pure nested dict of the NNX state (kernels HWIO, keys sorted
    at every level as NNX sorts them), arrays of ``dtype``."""
    flat = {path: weights.tensors[name] for name, path in key_table(weights.variant).items()}
    state: dict[str, Any] = {}
    for path in flat:
        node = state
        *parents, leaf = path.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        arr = flat[path]
        arr = oihw_to_hwio(arr) if leaf == "kernel" else np.ascontiguousarray(arr)
        node[leaf] = arr.astype(dtype, copy=False)
    return _sorted_tree(state)


def _sorted_tree(tree: dict) -> dict:
    return {k: (_sorted_tree(v) if isinstance(v, dict) else v)
            for k, v in sorted(tree.items(), key=lambda kv: str(kv[0]))}


def _flatten(tree: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(tree, dict) and CHUNKED_KEY not in tree:
        for k, v in tree.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    else:
        out[prefix] = tree


def from_state(state: dict, meta: dict | None = None, *,
               variant: Variant | None = None) -> Weights:
    """The pure nested dict of an NNX state (NumPy or JAX arrays, kernels HWIO) -> canonical
    :class:`Weights`.  ``meta``: canonical metadata (missing architecture fields come from
    ``variant`` or are inferred from shapes)."""
    flat: dict[str, Any] = {}
    _flatten(state, "", flat)
    arrays: dict[str, np.ndarray] = {}
    for key, value in flat.items():
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise WeightsError(f"{key}: expected an array, got {type(value).__name__}")
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            raise WeightsError(f"{key}: expected a float array, got dtype {arr.dtype}")
        arrays[key] = arr
    meta = dict(meta or {})
    if not has_architecture(meta):
        if variant is not None:
            found = variant
            how = f"architecture {variant.id} given by the caller"
        else:
            complex_ = any(p.startswith("fire") and p.endswith("/bypass/kernel") for p in arrays)
            found = infer_variant(*(getattr(arrays.get(k), "shape", None)
                                    for k in ("conv1/kernel", "conv10/kernel")),
                                  names=("conv1/kernel", "conv10/kernel"), layout="HWIO",
                                  bypass="complex" if complex_ else "none")
            how = ("architecture inferred from shapes (final_conv_padding and simple "
                   "bypass cannot be)")
        meta = {**found.to_meta(), **meta}
        meta.setdefault("preprocessing", "none")
        meta.setdefault("source", f"flax msgpack without metadata; {how}")
    v = meta_variant(meta)
    table = key_table(v)
    spec = v.params()
    problems = key_problems({k: a.shape for k, a in arrays.items()},
                            {key: _flax_shape(name, spec[name]) for name, key in table.items()},
                            note=lambda k: " (HWIO)" if k.endswith("/kernel") else "")
    if problems:
        raise WeightsError(f"does not match SqueezeNet {v.id}: " + "; ".join(problems))
    tensors = {name: (hwio_to_oihw if key.endswith("/kernel") else np.asarray)(
        arrays[key].astype(np.float32)) for name, key in table.items()}
    return Weights(tensors, {str(k): str(val) for k, val in meta.items()})


# --- bytes <-> tree ---------------------------------------------------------------------------
class _Ext:
    """An undecoded msgpack ext object (decoded later, when its key path is known)."""

    __slots__ = ("code", "data")

    def __init__(self, code: int, data: bytes) -> None:
        self.code, self.data = code, data


def _msgpack():
    return dependency("msgpack", NAME)


def _decode_ext(ext: Any, key: str) -> np.ndarray:
    if not isinstance(ext, _Ext):
        raise WeightsError(f"{key}: expected an array (msgpack ext type {EXT_NDARRAY}), "
                           f"got {type(ext).__name__}")
    if ext.code != EXT_NDARRAY:
        raise WeightsError(f"{key}: msgpack ext type {ext.code}, expected {EXT_NDARRAY} (ndarray)")
    msgpack = _msgpack()
    try:
        inner = msgpack.unpackb(ext.data, raw=True)
    except Exception as e:
        raise WeightsError(f"{key}: array payload is not valid msgpack ({type(e).__name__}: {e})") \
            from None
    if not isinstance(inner, (list, tuple)) or len(inner) != 3:
        raise WeightsError(f"{key}: array payload must be [shape, dtype, data]")
    shape, dtype_name, data = inner
    if (not isinstance(shape, (list, tuple)) or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40
                       for d in shape)):
        raise WeightsError(f"{key}: shape {shape!r} is not a list of at most {MAX_NDIM} "
                           "non-negative ints")
    if isinstance(dtype_name, bytes):
        dtype_name = dtype_name.decode("ascii", "replace")
    if dtype_name not in _DTYPES:
        raise WeightsError(f"{key}: dtype {dtype_name!r}, expected one of {', '.join(_DTYPES)}")
    if not isinstance(data, bytes):
        raise WeightsError(f"{key}: array data must be msgpack bin, got {type(data).__name__}")
    dtype = _DTYPES[dtype_name]
    nbytes = math.prod(shape) * dtype.itemsize
    if len(data) != nbytes:
        raise WeightsError(f"{key}: shape {list(shape)} {dtype_name} needs {nbytes} bytes, "
                           f"payload has {len(data)}")
    arr = np.frombuffer(data, dtype=dtype).reshape(shape)
    return widen_bfloat16(arr) if dtype_name == "bfloat16" else arr.astype(np.float32)


def _unchunk(node: dict, key: str) -> np.ndarray:
    shape_d, chunks_d = node.get("shape"), node.get("chunks")
    if set(node) != {CHUNKED_KEY, "shape", "chunks"} or not isinstance(shape_d, dict) \
            or not isinstance(chunks_d, dict):
        raise WeightsError(f"{key}: chunked array must have exactly {CHUNKED_KEY}, shape, chunks")
    try:
        shape = [shape_d[str(i)] for i in range(len(shape_d))]
        chunks = [chunks_d[str(i)] for i in range(len(chunks_d))]
    except KeyError:
        raise WeightsError(f"{key}: chunked array keys must be '0', '1', ...") from None
    if len(shape) > MAX_NDIM or not all(isinstance(d, int) and not isinstance(d, bool)
                                        and 0 <= d < 2 ** 40 for d in shape):
        raise WeightsError(f"{key}: chunked shape {shape!r} is not a list of non-negative ints")
    pieces = [_decode_ext(c, f"{key}/chunks/{i}") for i, c in enumerate(chunks)]
    if any(p.ndim != 1 for p in pieces):
        raise WeightsError(f"{key}: chunks must be 1-D")
    total = sum(p.size for p in pieces)
    if total != math.prod(shape):
        raise WeightsError(f"{key}: chunks hold {total} values, shape {shape} needs "
                           f"{math.prod(shape)}")
    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    return flat.reshape(shape)


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    """Bytes of a Flax msgpack state file -> canonical :class:`Weights` (not yet checked
    against the spec beyond shapes and key paths)."""
    msgpack = _msgpack()
    try:
        tree = msgpack.unpackb(blob, ext_hook=_Ext, raw=False, strict_map_key=False)
    except Exception as e:
        raise WeightsError(f"not a msgpack file ({type(e).__name__}: {e})") from None
    if not isinstance(tree, dict):
        raise WeightsError(f"top level is a msgpack {type(tree).__name__}, expected a map of "
                           "module names")
    meta = tree.pop(METADATA_KEY, None)
    if meta is not None:
        meta = string_meta(meta, METADATA_KEY)

    def arrays(node: Any, key: str, depth: int) -> Any:
        if isinstance(node, dict):
            if CHUNKED_KEY in node:
                return _unchunk(node, key)
            if depth >= MAX_DEPTH:
                raise WeightsError(f"{key}: maps nested deeper than {MAX_DEPTH} levels")
            return {k: arrays(v, f"{key}/{k}" if key else str(k), depth + 1)
                    for k, v in node.items()}
        return _decode_ext(node, key)

    state = arrays(tree, "", 0)
    return from_state(state, meta, variant=variant)


def _ext(arr: np.ndarray):
    msgpack = _msgpack()
    payload = msgpack.packb([list(arr.shape), arr.dtype.name,
                             np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
                             .tobytes()], use_bin_type=True)
    return msgpack.ExtType(EXT_NDARRAY, payload)


def _pack_leaf(arr: np.ndarray):
    """An array as Flax packs it: one ext object, or Flax's chunked form above 1 GiB."""
    if arr.nbytes <= MAX_CHUNK_SIZE:
        return _ext(arr)
    step = max(1, MAX_CHUNK_SIZE // arr.dtype.itemsize)
    flat = arr.reshape(-1)
    chunks = [flat[i:i + step] for i in range(0, flat.size, step)]
    return {CHUNKED_KEY: True,
            "shape": {str(i): int(d) for i, d in enumerate(arr.shape)},
            "chunks": {str(i): _ext(c) for i, c in enumerate(chunks)}}


def encode(weights: Weights, *, metadata: bool = True) -> bytes:
    """Canonical weights -> Flax msgpack bytes (float32, kernels HWIO).  With
    ``metadata=False`` the bytes equal ``flax.serialization.msgpack_serialize`` of the NNX
    state's pure dict."""
    msgpack = _msgpack()

    def pack(node):
        if isinstance(node, dict):
            return {k: pack(v) for k, v in node.items()}
        return _pack_leaf(node)

    tree = pack(to_state(weights))
    if metadata:
        tree = {METADATA_KEY: dict(weights.meta), **tree}
    return msgpack.packb(tree, use_bin_type=True)


def read(path, *, variant: Variant | None = None) -> Weights:
    with open(path, "rb") as f:
        blob = f.read()
    return decode(blob, variant=variant)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
