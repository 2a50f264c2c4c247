"""MXNet ``.params`` files (``mx.nd.save`` / Gluon ``save_parameters``), without MXNet.

The key table here is shared by the Gluon port (:mod:`ports.mxnet`) and this codec.

File layout
-----------
MXNet 1.x ``NDArray::Save`` (``src/ndarray/ndarray.cc``) over a dmlc stream; every number
little-endian, checked byte by byte against files written by MXNet 1.9.1::

    u64 0x112 (list magic) | u64 0 (reserved)
    u64 count | count x NDArray
    u64 count' (0, or = count) | count' x (u64 length | length bytes of UTF-8 name)

    NDArray, version 2 (what MXNet 1.x writes) or 3 (np-shape semantics):
        u32 magic 0xF993FAC9 (V2) / 0xF993FACA (V3)
        i32 storage type (0 = dense; row_sparse / csr are refused here)
        i32 ndim | ndim x i64 dims               (V2: ndim 0 = a "none" array, nothing follows)
        i32 device type (1 = CPU) | i32 device id
        i32 type flag (0 float32, 1 float64, 2 float16, 3 uint8, 4 int32, 5 int8, 6 int64)
        prod(dims) x itemsize bytes of raw C-order data

    Older files are read too: version 1 (u32 0xF993FAC8, then as V2 without the storage
    type) and the legacy layout without magic (u32 ndim, ndim x u32 dims, then context...).

The writer emits V2, CPU context, float32, and the names list, exactly as
``save_parameters`` of the Gluon model zoo's SqueezeNet does: a zoo-saved file read and
written back is byte-identical.

Names
-----
Gluon ``save_parameters`` names are structural (the block's child path), and this codec's
names equal the Gluon model zoo's ``SqueezeNet`` (``gluon.model_zoo.vision.squeezenet1_0`` /
``1_1``): ``features`` is conv1, ReLU, the pools and fires, and Dropout, in order;
``output`` is conv10, ReLU, the pool and Flatten.  Inside fire ``features.K``:
``K.0.0`` squeeze, ``K.1.0.0`` expand1x1, ``K.1.1.0`` expand3x3 (each with ``.weight``,
``.bias``).  conv10 is ``output.0``.  E.g. v1.0 ``fire2.squeeze.weight`` is
``features.3.0.0.weight``; v1.1 ``fire4.expand3x3.bias`` is ``features.6.1.1.0.bias``.
A complex-bypass 1x1 conv (no zoo equivalent) is ``features.K.bypass.weight`` / ``.bias``,
as in the PyTorch port.

Files of exported symbol checkpoints (``HybridBlock.export``: ``NAME-0000.params``) are
read too: their names are ``arg:`` / ``aux:`` + the parameters' global names, which for the
zoo (and :mod:`ports.mxnet`) are ``<prefix>conv<i>_weight`` / ``_bias`` with ``i`` counting
the convolutions in creation order: conv1, then per fire squeeze, expand1x1, expand3x3
(bypass), then conv10, which is the spec's order.  ``arg:`` names that are structural are
mapped through the table above.

What is inferred (``.params`` has no metadata slot)
---------------------------------------------------
* ``variant`` from conv1's kernel (7x7 -> ``1_0``, 3x3 -> ``1_1``);
* ``num_classes`` from conv10's filter count;
* ``bypass``: ``complex`` when bypass convs are present, otherwise ``none`` (a simple bypass
  has no parameters, so it cannot be told from none: pass ``variant=``);
* ``final_conv_padding``: 0, the Gluon zoo's (Caffe's v1.0 uses 1: pass ``variant=``);
* ``preprocessing``: ``torchvision`` (the Gluon zoo's normalisation) unless given;
* ``source``: ``mxnet .params file <name>``.
float64 and float16 tensors are rounded / widened to float32 (canonical); integer
tensors are refused.  Writing drops all metadata.
"""

from __future__ import annotations

import math
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Mapping

import numpy as np

from .. import spec as S
from ..errors import WeightsError
from ..spec import Variant
from ._io import atomic_write
from .canonical import Weights, key_problems
from .canonical import infer_variant as infer_variant_of

NAME = "mxnet"

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
CPU_DEVICE = 1
MAX_NDIM = 32
MAX_DIM = (1 << 40) - 1    # no dimension of a real array is larger
MAX_EMPTY_SPAN = 1 << 40   # an empty array's non-zero dimensions multiply to at most this
MAX_NAME = 1 << 16
# mshadow type flag -> little-endian NumPy dtype; only the floating ones become canonical.
TYPE_FLAGS = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8"}
FLOAT_FLAGS = (0, 1, 2)
STORAGE_NAMES = {0: "default", 1: "row_sparse", 2: "csr"}
_SYMBOL_NAME = re.compile(r"^(.*?)conv([0-9]{1,9})_(weight|bias)$")


# --- the key table -------------------------------------------------------------------------
def gluon_groups(variant: Variant) -> dict[str, list[S.Layer]]:
    """``{"features": [...], "output": [...]}``: the Gluon zoo's split of the layers
    (``features`` ends with the Dropout; ``output`` is conv10, ReLU, the average pool)."""
    layers = variant.layers()
    drop = max(i for i, layer in enumerate(layers) if isinstance(layer, S.Dropout))
    return {"features": layers[:drop + 1], "output": layers[drop + 1:]}


# Position of each conv of a Fire inside the zoo's fire block.
FIRE_PATHS = {"squeeze": "0.0", "expand1x1": "1.0.0", "expand3x3": "1.1.0", "bypass": "bypass"}


def key_table(variant: Variant) -> dict[str, str]:
    """Canonical name -> Gluon structural name, for every parameter (in spec order)."""
    table: dict[str, str] = {}
    for group, layers in gluon_groups(variant).items():
        for index, layer in enumerate(layers):
            if isinstance(layer, S.Conv):
                convs = [(layer.name, f"{group}.{index}")]
            elif isinstance(layer, S.Fire):
                convs = [(c.name, f"{group}.{index}.{FIRE_PATHS[c.name.split('.', 1)[1]]}")
                         for c in layer.convs()]
            else:
                continue
            for canonical, key in convs:
                for p in ("weight", "bias"):
                    table[f"{canonical}.{p}"] = f"{key}.{p}"
    order = list(variant.params())
    return {k: table[k] for k in order}


# --- the NDArray list ----------------------------------------------------------------------
class _Reader:
    def __init__(self, blob: bytes) -> None:
        self.blob, self.pos = memoryview(blob), 0

    @property
    def left(self) -> int:
        return len(self.blob) - self.pos

    def take(self, n: int, what: str) -> memoryview:
        if n > self.left:
            raise WeightsError(f"file ends inside {what}: needs {n} bytes at offset {self.pos}, "
                               f"{self.left} left (truncated?)")
        out = self.blob[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))


def _read_shape(r: _Reader, what: str, legacy_ndim: int | None = None):
    """The dims, or ``None`` for V3's unknown shape (ndim -1)."""
    if legacy_ndim is None:
        (ndim,) = r.unpack("<i", f"{what} ndim")
        wide = True
    else:
        ndim, wide = legacy_ndim, False
    if ndim == -1 and legacy_ndim is None:
        return None
    if not 0 <= ndim <= MAX_NDIM:
        raise WeightsError(f"{what}: ndim {ndim} outside 0..{MAX_NDIM} (not a .params file?)")
    dims = r.unpack(f"<{ndim}{'q' if wide else 'I'}", f"{what} dims")
    if any(not 0 <= d <= MAX_DIM for d in dims):
        raise WeightsError(f"{what}: absurd shape {list(dims)} (each dimension must be "
                           f"0..{MAX_DIM})")
    return tuple(int(d) for d in dims)


def _read_ndarray(r: _Reader, index: int) -> np.ndarray:
    what = f"NDArray {index}"
    start = r.pos
    (magic,) = r.unpack("<I", f"{what} magic")
    if magic in (V2_MAGIC, V3_MAGIC):
        (stype,) = r.unpack("<i", f"{what} storage type")
        if stype != 0:
            raise WeightsError(f"{what}: storage type {stype} "
                         f"({STORAGE_NAMES.get(stype, 'unknown')}); only dense arrays are "
                         "supported")
        shape = _read_shape(r, what)
        # V2 marks a "none" array with ndim 0; V3 (np shape) with ndim -1 (0 is a scalar).
        none = shape is None or (magic == V2_MAGIC and not shape)
    elif magic == V1_MAGIC:
        shape = _read_shape(r, what)
        none = not shape
    elif magic <= MAX_NDIM:  # legacy: the "magic" is ndim of a u32 shape
        shape = _read_shape(r, what, legacy_ndim=magic)
        none = not shape
    else:
        raise WeightsError(f"{what} at offset {start}: magic 0x{magic:08X} is not an NDArray "
                     f"(expected 0x{V2_MAGIC:08X})")
    if none:
        raise WeightsError(f"{what} is an empty ('none') array")
    dev_type, dev_id = r.unpack("<ii", f"{what} context")
    if dev_type not in (1, 2, 3, 5) or dev_id < 0:
        raise WeightsError(f"{what}: bad context ({dev_type}, {dev_id})")
    (flag,) = r.unpack("<i", f"{what} type flag")
    if flag not in TYPE_FLAGS:
        raise WeightsError(f"{what}: unsupported type flag {flag} (known: "
                     f"{', '.join(f'{k}={np.dtype(v).name}' for k, v in TYPE_FLAGS.items())})")
    dtype = np.dtype(TYPE_FLAGS[flag])
    count = math.prod(shape)  # exact (Python ints): never wraps
    nbytes = count * dtype.itemsize
    if nbytes > r.left:
        raise WeightsError(f"{what}: shape {list(shape)} of {dtype.name} needs {nbytes} bytes, "
                     f"only {r.left} left in the file (truncated?)")
    # A zero dimension makes the byte count 0 whatever the others say; the others must
    # still describe an array NumPy can index (and no real file has more than this).
    if count == 0 and math.prod(d for d in shape if d) > MAX_EMPTY_SPAN:
        raise WeightsError(f"{what}: absurd shape {list(shape)}: empty, but its other dimensions "
                     f"multiply to more than {MAX_EMPTY_SPAN}")
    flat = np.frombuffer(r.take(nbytes, f"{what} data"), dtype=dtype)
    if flat.size != count:  # cannot happen after the checks above; never reshape blindly
        raise WeightsError(f"{what}: {flat.size} elements read for shape {list(shape)}")
    return flat.reshape(shape)


def decode_ndarrays(blob: bytes) -> dict[str, np.ndarray]:
    """The named arrays of an NDArray list file, in file order (read-only views into
    ``blob``, little-endian).  Every length is checked against the bytes left before any
    array is made; any inconsistency raises :class:`WeightsError`."""
    r = _Reader(blob)
    if len(blob) < 24:
        raise WeightsError(f"file is {len(blob)} bytes, too short for the 24-byte NDArray list "
                           "header")
    magic, _reserved, count = r.unpack("<QQQ", "header")
    if magic != LIST_MAGIC:
        raise WeightsError(f"list magic 0x{magic:X}, expected 0x{LIST_MAGIC:X}: not an MXNet "
                           ".params (NDArray list) file")
    if count > r.left // 16:  # every NDArray takes at least 16 bytes
        raise WeightsError(f"header claims {count} arrays, more than the {r.left} bytes left can "
                           "hold (truncated or not a .params file?)")
    arrays = [_read_ndarray(r, i) for i in range(count)]
    (n_names,) = r.unpack("<Q", "name count")
    if n_names == 0:
        raise WeightsError(f"the file holds {count} arrays without names (an mx.nd.save list); "
                           "parameters need names")
    if n_names != count:
        raise WeightsError(f"{n_names} names for {count} arrays")
    names = []
    for i in range(n_names):
        (length,) = r.unpack("<Q", f"name {i} length")
        if length > MAX_NAME:
            raise WeightsError(f"name {i}: length {length} exceeds {MAX_NAME} (not a .params "
                               "file?)")
        try:
            names.append(bytes(r.take(length, f"name {i}")).decode("utf-8"))
        except UnicodeDecodeError:
            raise WeightsError(f"name {i} is not UTF-8") from None
    if r.left:
        raise WeightsError(f"{r.left} unexpected bytes after the name list")
    if len(set(names)) != len(names):
        dup = sorted(n for n, k in Counter(names).items() if k > 1)
        raise WeightsError(f"duplicate names: {', '.join(dup[:10])}"
                           + (f" and {len(dup) - 10} more" if len(dup) > 10 else ""))
    return dict(zip(names, arrays))


def encode_ndarrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """An NDArray list file (V2, dense, CPU) of named arrays, in the mapping's order."""
    flags = {np.dtype(v).name: k for k, v in TYPE_FLAGS.items()}
    chunks = [struct.pack("<QQQ", LIST_MAGIC, 0, len(arrays))]
    for name, arr in arrays.items():
        arr = np.asarray(arr)
        if arr.dtype.name not in flags:
            raise ValueError(f"{name}: dtype {arr.dtype} has no MXNet type flag")
        flag = flags[arr.dtype.name]
        if arr.ndim == 0:
            raise ValueError(f"{name}: 0-d arrays cannot be written (V2 reads them as 'none')")
        chunks.append(struct.pack(f"<Iii{arr.ndim}qiii", V2_MAGIC, 0, arr.ndim, *arr.shape,
                                  CPU_DEVICE, 0, flag))
        chunks.append(np.ascontiguousarray(arr, dtype=TYPE_FLAGS[flag]).tobytes())
    chunks.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        raw = name.encode("utf-8")
        chunks.append(struct.pack("<Q", len(raw)) + raw)
    return b"".join(chunks)


# --- canonical <-> Gluon -------------------------------------------------------------------
def _symbol_table(names: list[str], variant: Variant) -> dict[str, str]:
    """Canonical name -> exported global name (``<prefix>conv<i>_weight``)."""
    found: dict[int, dict[str, str]] = {}
    prefixes = set()
    for name in names:
        m = _SYMBOL_NAME.match(name)
        if m is None:
            raise WeightsError(f"name {name!r} is neither a Gluon structural name nor "
                               "'<prefix>conv<i>_weight|bias'")
        prefixes.add(m.group(1))
        found.setdefault(int(m.group(2)), {})[m.group(3)] = name
    if len(prefixes) > 1:
        raise WeightsError(f"exported names mix prefixes {sorted(prefixes)}")
    convs = list(variant.convs())
    if sorted(found) != list(range(len(found))) or len(found) != len(convs):
        raise WeightsError(f"exported convolutions numbered {sorted(found)}, expected "
                           f"0..{len(convs) - 1}"
                           f" for SqueezeNet {variant.id}")
    table = {}
    for i, conv in enumerate(convs):
        for p in ("weight", "bias"):
            if p not in found[i]:
                raise WeightsError(f"exported conv{i} ({conv.name}) lacks its {p}")
            table[f"{conv.name}.{p}"] = found[i][p]
    return table


def _conv_names(arrays: Mapping[str, np.ndarray]) -> tuple[str, str, bool]:
    """(conv1 weight name, conv10 weight name, bypass convs present) from the names."""
    if "features.0.weight" in arrays:
        return "features.0.weight", "output.0.weight", \
            any(k.endswith(".bypass.weight") for k in arrays)
    indexed = {}
    for k in arrays:
        m = _SYMBOL_NAME.match(k)
        if m and m.group(3) == "weight":
            indexed[int(m.group(2))] = k
    if not indexed:
        return "", "", False
    return indexed[min(indexed)], indexed[max(indexed)], \
        len(indexed) > len(list(Variant().convs()))


def infer_variant(arrays: Mapping[str, np.ndarray]) -> Variant:
    """The architecture a Gluon name -> array mapping implies (see the module docstring)."""
    first, last, bypass_convs = _conv_names(arrays)
    if not first or first not in arrays or last not in arrays:
        raise WeightsError("cannot find conv1 ('features.0.weight') and conv10 ('output.0.weight') "
                           f"among the names: {', '.join(list(arrays)[:8])}"
                           + (" ..." if len(arrays) > 8 else ""))
    return infer_variant_of(arrays[first].shape, arrays[last].shape,
                            names=(repr(first), repr(last)),
                            bypass="complex" if bypass_convs else "none")


def to_canonical(arrays: Mapping[str, np.ndarray], variant: Variant | None = None
                 ) -> tuple[dict[str, np.ndarray], Variant]:
    """Gluon-named arrays (structural, or ``arg:``/``aux:`` exported names) -> canonical
    float32 tensors and the variant (``variant`` if given, else inferred)."""
    names = list(arrays)
    if names and all(n.startswith(("arg:", "aux:")) for n in names):
        arrays = {n[4:]: a for n, a in arrays.items()}
    elif any(n.startswith(("arg:", "aux:")) for n in names):
        raise WeightsError("names mix 'arg:'/'aux:' prefixed and plain names")
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            raise WeightsError(f"{name}: dtype {arr.dtype.name}, expected a floating type")
    v = variant or infer_variant(arrays)
    structural = "features.0.weight" in arrays
    table = key_table(v) if structural else _symbol_table(list(arrays), v)
    # shapes are checked afterwards, under canonical names, by ports.formats.canonical.check
    problems = key_problems(list(arrays), list(table.values()), noun="")
    if problems:
        raise WeightsError(f"names do not match SqueezeNet {v.id} in Gluon naming: "
                           + "; ".join(problems))
    tensors = {c: np.array(arrays[g], dtype=np.float32) for c, g in table.items()}
    return tensors, v


def decode(blob: bytes, *, path=None, variant: Variant | None = None,
           preprocessing: str = "torchvision") -> Weights:
    tensors, v = to_canonical(decode_ndarrays(blob), variant)
    source = f"mxnet .params file {Path(path).name}" if path is not None else "mxnet .params"
    return Weights(tensors, {**v.to_meta(), "preprocessing": preprocessing, "source": source})


def read(path, *, variant: Variant | None = None,
         preprocessing: str = "torchvision") -> Weights:
    """Canonical weights from a ``.params`` file (checked by :func:`ports.formats.read`)."""
    with open(path, "rb") as f:
        blob = f.read()
    return decode(blob, path=path, variant=variant, preprocessing=preprocessing)


def encode(weights: Weights) -> bytes:
    """Gluon structural names, spec order, float32 (loads with ``load_parameters``)."""
    table = key_table(weights.variant)
    return encode_ndarrays({table[k]: np.asarray(weights.tensors[k], dtype="<f4")
                            for k in table})


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
