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
import os
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
    """Read a file: the header first, checked against the file size, then only the data
    the header describes (a huge or hostile file is rejected before it is loaded)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        n = _header_length(head, size, path)
        text = f.read(n)
        entries, meta = _parse_header(text, size - 8 - n, path)
        needed = max((stop for _, _, stop, _ in entries), default=0)
        data = f.read(needed)
    if len(data) != needed:  # the file shrank while we read it
        raise WeightsError(f"file ends after {8 + n + len(data)} bytes, the header needs "
                           f"{8 + n + needed}", path=path, format=NAME)
    return _tensors(entries, meta, data)


def decode(blob: bytes, *, path=None) -> Weights:
    """Decode a whole file held in memory."""
    n = _header_length(blob[:8], len(blob), path)
    entries, meta = _parse_header(blob[8:8 + n], len(blob) - 8 - n, path)
    return _tensors(entries, meta, memoryview(blob)[8 + n:])


def _fail(reason: str, path) -> WeightsError:
    return WeightsError(reason, path=path, format=NAME)


def _header_length(head: bytes, size: int, path) -> int:
    if len(head) < 8:
        raise _fail(f"file is {size} bytes, too short for the 8-byte header length", path)
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_HEADER, size - 8):
        raise _fail(f"header length {n} exceeds the file ({size} bytes) or {MAX_HEADER}", path)
    return n


def _no_duplicates(pairs: list) -> dict:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


class _Duplicate(Exception):
    pass


def _parse_header(text: bytes, data_len: int, path) -> tuple[list, dict]:
    """Validated ``[(name, begin, stop, shape)]`` (sorted by offset) and metadata."""
    def fail(reason: str) -> WeightsError:
        return _fail(reason, path)

    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except _Duplicate as e:
        raise fail(f"header names {e.args[0]!r} twice") from None
    except RecursionError:
        raise fail("header is not valid JSON: nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:
        raise fail(f"header is not valid JSON: {e}") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    meta = header.pop("__metadata__", None)
    meta = {} if meta is None else meta
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise fail("__metadata__ must map strings to strings")
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise fail(f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str) or dtype not in _DTYPES:
            raise fail(f"tensor {name!r}: dtype {dtype!r}, expected F32")
        if (not isinstance(shape, list) or len(shape) > 8
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                           for d in shape)):
            raise fail(f"tensor {name!r}: shape {shape!r} is not a list of at most 8 "
                       "non-negative ints")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise fail(f"tensor {name!r}: data_offsets {offsets!r} outside the "
                       f"{data_len}-byte data section")
        nbytes = math.prod(shape) * _DTYPES[dtype].itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise fail(f"tensor {name!r}: shape {shape} needs {nbytes} bytes, "
                       f"data_offsets span {offsets[1] - offsets[0]}")
        entries.append((name, offsets[0], offsets[1], tuple(shape)))
    entries.sort(key=lambda e: (e[1], e[2]))
    end = 0
    for name, begin, stop, _ in entries:
        if begin < end:
            raise fail(f"tensor {name!r} overlaps the previous tensor's data")
        end = stop
    return entries, dict(meta)


def _tensors(entries: list, meta: dict, data) -> Weights:
    tensors: dict[str, np.ndarray] = {}
    for name, begin, stop, shape in entries:
        arr = np.frombuffer(data[begin:stop], dtype=_DTYPES["F32"])
        tensors[name] = arr.reshape(shape).astype(np.float32)  # native-endian copy
    return Weights(tensors, meta)


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
