"""Canonical weights as safetensors: the project's own reader and writer.

File layout (https://github.com/huggingface/safetensors, little-endian)::

    u64 N | N bytes of JSON header | data
    header = {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [...],
              "data_offsets": [begin, end]}, ...}     # offsets relative to data start

Only ``F32`` tensors are canonical.  Every length is checked against the file size before
anything is allocated; any inconsistency raises :class:`ports.errors.WeightsError`.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np

from .._io import atomic_write
from ..canonical import Weights
from ..errors import WeightsError
from ..spec import Variant

NAME = "safetensors"
EXTENSIONS = (".safetensors",)
MAX_HEADER = 16 * 1024 * 1024
_DTYPES = {"F32": np.dtype("<f4")}


def read(path, *, variant: Variant | None = None) -> Weights:
    with open(path, "rb") as f:
        blob = f.read()
    return decode(blob, path=path)


def decode(blob: bytes, *, path=None) -> Weights:
    def fail(reason: str) -> WeightsError:
        return WeightsError(reason, path=path, format=NAME)

    if len(blob) < 8:
        raise fail(f"file is {len(blob)} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(MAX_HEADER, len(blob) - 8):
        raise fail(f"header length {n} exceeds the file ({len(blob)} bytes) or {MAX_HEADER}")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise fail("__metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n:]
    tensors: dict[str, np.ndarray] = {}
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise fail(f"tensor {name!r}: dtype {dtype!r}, expected F32")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                           for d in shape)):
            raise fail(f"tensor {name!r}: shape {shape!r} is not a list of non-negative ints")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(data)):
            raise fail(f"tensor {name!r}: data_offsets {offsets!r} outside the "
                       f"{len(data)}-byte data section")
        nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise fail(f"tensor {name!r}: shape {shape} needs {nbytes} bytes, "
                       f"data_offsets span {offsets[1] - offsets[0]}")
        spans.append((offsets[0], offsets[1], name))
        arr = np.frombuffer(data[offsets[0]:offsets[1]], dtype=_DTYPES[dtype])
        tensors[name] = arr.reshape(shape).astype(np.float32)  # native-endian copy
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin < end:
            raise fail(f"tensor {name!r} overlaps the previous tensor's data")
        end = stop
    return Weights(tensors, dict(meta))


def encode(weights: Weights) -> bytes:
    """Tensors in canonical (spec) order, header padded with spaces to 8 bytes."""
    order = list(weights.variant.params())
    order += sorted(k for k in weights.tensors if k not in order)
    header: dict = {"__metadata__": dict(weights.meta)}
    chunks, offset = [], 0
    for name in order:
        arr = np.ascontiguousarray(weights.tensors[name], dtype="<f4")
        raw = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights), overwrite=overwrite)]
