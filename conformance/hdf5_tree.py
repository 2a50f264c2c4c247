"""An HDF5 file as a comparable value, for tests that check a codec writes the file a
framework writes (Keras 3's ``.weights.h5`` and ``.keras`` members, tf_keras's ``.h5``).

Imports h5py, so only the environments that have it import this module.
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np

from ports.formats.keras import META_ATTR


def _attrs(obj) -> dict:
    """Attribute -> (its stored HDF5 type: string encoding, dtype, shape; its value); the
    codec's own metadata attribute (which no framework writes) left out."""
    out = {}
    for k, v in obj.attrs.items():
        if k == META_ATTR:
            continue
        stored, v = obj.attrs.get_id(k), np.asarray(v)
        kind = (h5py.check_string_dtype(stored.dtype), stored.dtype.str, stored.shape)
        out[k] = (kind, [x.decode() if isinstance(x, bytes) else str(x)
                         for x in v.reshape(-1)] if v.dtype.kind in "SOU" else v.tolist())
    return out


def tree(source: str | Path | bytes) -> dict:
    """Every group and dataset of an HDF5 file (a path or its bytes): path ->
    ``("group", attributes)`` or ``("dataset", attributes, shape, dtype, bytes)``."""
    with h5py.File(io.BytesIO(source) if isinstance(source, bytes) else source, "r") as f:
        out = {"/": ("group", _attrs(f))}

        def visit(name, obj):
            out[name] = (("dataset", _attrs(obj), obj.shape, obj.dtype.str, obj[()].tobytes())
                         if isinstance(obj, h5py.Dataset) else ("group", _attrs(obj)))
        f.visititems(visit)
    return out
