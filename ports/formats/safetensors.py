"""Canonical weights as safetensors, read and written by the ``safetensors`` library.

File layout (https://github.com/huggingface/safetensors, little-endian)::

    u64 N | N bytes of JSON header | data
    header = {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [...],
              "data_offsets": [begin, end]}, ...}     # offsets relative to data start

The library parses and checks the file (header size, JSON, every offset against the data,
the data fully covered); a file it refuses raises :class:`ports.errors.WeightsError` with its
reason.  The header is checked before any data is read (and, in a large file, before the
library maps it), so a huge file with a bad header costs nothing; tensors are read with
``pread`` rather than through the mapping (a file truncated meanwhile is an error, not a
``SIGBUS``).  Only ``F32`` tensors are canonical.  The library writes tensors sorted by name
(they are read back in spec order) and the metadata in hash order (sorted here, so that equal
weights give equal bytes).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..spec import Variant
from ._io import atomic_write
from ._library import dependency
from .canonical import Weights, meta_variant

NAME = "safetensors"
DTYPE = "F32"
HEADER_MAX = 100_000_000  # the library's limit on the header
PRECHECK = 64 << 20       # larger files have their header checked before they are mapped


def _library():
    dependency("safetensors.numpy", NAME)
    return dependency("safetensors", NAME)


def _reason(e: Exception) -> str:
    return str(e) or type(e).__name__


def read(path, *, variant: Variant | None = None) -> Weights:
    """A ``.safetensors`` file -> :class:`Weights`: the header first, checked by the library
    against the file, then only the tensors it describes."""
    st = _library()
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        header = f.read(max(0, min(n, os.fstat(f.fileno()).st_size - 8, HEADER_MAX)))
    _check_unique_names(header)
    if os.path.getsize(path) > PRECHECK:
        _check_header_first(st, head + header)
    try:
        try:
            f = st.safe_open(os.fspath(path), framework="numpy", backend="pread")
        except TypeError:  # pragma: no cover - safetensors before 0.7 has no backend
            f = st.safe_open(os.fspath(path), framework="numpy")
        with f:
            names = list(f.keys())
            _check_dtypes({k: f.get_slice(k).get_dtype() for k in names})
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in names}
    except (st.SafetensorError, OSError) as e:
        raise WeightsError(_reason(e)) from None
    return _weights(tensors, meta)


def _check_unique_names(header: bytes) -> None:
    """The library keeps the last of two entries with one name; a file that names a tensor
    twice is ambiguous and refused here.  (Anything else wrong with the header is left to the
    library, which says what.)"""
    def pairs(items):
        names = [k for k, _ in items]
        twice = sorted({k for k in names if names.count(k) > 1})
        if twice:
            raise WeightsError(f"header names {', '.join(map(repr, twice))} twice")
        return dict(items)

    try:
        json.loads(header, object_pairs_hook=pairs)
    except WeightsError:
        raise
    except (ValueError, RecursionError):  # not JSON: the library's to say
        pass


def _check_header_first(st, prefix: bytes) -> None:
    """To read a header the library maps the whole file: address space, which a memory cap
    counts, and no use when the header is bad.  The header alone goes to the library first;
    its only complaint about a good one is that the data is not there."""
    try:
        st.deserialize(prefix)
    except st.SafetensorError as e:
        if "not fully covered" not in str(e):
            raise WeightsError(_reason(e)) from None


def decode(blob: bytes) -> Weights:
    """Decode a whole file held in memory."""
    st = _library()
    if len(blob) >= 8:
        (n,) = struct.unpack("<Q", bytes(blob[:8]))
        _check_unique_names(bytes(blob[8:8 + min(n, HEADER_MAX)]))
    try:
        entries = st.deserialize(bytes(blob))
    except st.SafetensorError as e:
        raise WeightsError(_reason(e)) from None
    _check_dtypes({k: info["dtype"] for k, info in entries})
    # The library returns no metadata from bytes: it is the header's, which the library has
    # just validated (a JSON object whose __metadata__ maps strings to strings).
    (n,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(bytes(blob[8:8 + n])).get("__metadata__") or {}
    arrays = {k: np.frombuffer(info["data"], "<f4").reshape(info["shape"])
              for k, info in entries}
    return _weights(arrays, meta)


def _check_dtypes(dtypes: dict[str, str]) -> None:
    for name, dtype in dtypes.items():
        if dtype != DTYPE:
            raise WeightsError(f"tensor {name!r}: dtype {dtype!r}, expected {DTYPE}")


def _weights(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> Weights:
    """Native-endian float32 copies, in spec order where the metadata names a variant."""
    try:
        order = list(meta_variant(meta).params())
    except WeightsError:
        order = []
    order = [k for k in order if k in arrays] + sorted(k for k in arrays if k not in order)
    return Weights({k: np.array(arrays[k], dtype=np.float32) for k in order}, dict(meta))


def encode(weights: Weights) -> bytes:
    """The ``.safetensors`` bytes of ``weights`` (float32 little-endian, metadata kept);
    equal weights give equal bytes."""
    st = _library()
    blob = st.numpy.save({k: np.ascontiguousarray(t, dtype="<f4")
                          for k, t in weights.tensors.items()}, metadata=dict(weights.meta))
    return _metadata_sorted(blob)


def _metadata_sorted(blob: bytes) -> bytes:
    """The library writes ``__metadata__`` in hash order, different on every call; the same
    header (its length, hence every offset, unchanged) with the metadata sorted by key."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    if "__metadata__" not in header:
        return blob
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > n:  # pragma: no cover - the same tokens in another order
        return blob
    return blob[:8] + text + b" " * (n - len(text)) + blob[8 + n:]


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
