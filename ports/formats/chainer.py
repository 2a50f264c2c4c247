"""Chainer's ``.npz`` (``chainer.serializers.save_npz``), read and written with NumPy alone.

Layout: a zip archive (what ``numpy.savez_compressed`` writes) holding one ``.npy`` member
per parameter, named by the parameter's path in the ``chainer.Chain``
(``ports.chainer.SqueezeNet``)::

    conv1/W  conv1/b                          conv1              W: OIHW, b: [O]
    fire2/squeeze/W    fire2/squeeze/b        fire2.squeeze
    fire2/expand1x1/W  fire2/expand1x1/b      fire2.expand1x1
    fire2/expand3x3/W  fire2/expand3x3/b      fire2.expand3x3
    fire2/bypass/W     fire2/bypass/b         fire2.bypass   (complex bypass only: the 1x1
                                                             conv on fire2, 4, 6, 8)
    ...
    conv10/W  conv10/b                        conv10

Chainer's ``Convolution2D`` stores ``W`` in OIHW, the canonical layout, so no transposition.

Metadata: the canonical metadata is stored as JSON in one extra member,
``squeezenet_meta`` (a 0-d unicode array, no pickle).  ``chainer.serializers.load_npz``
only looks up the keys of the chain it fills, so the extra member is ignored by Chainer,
with ``strict=True`` too.  Files saved by Chainer itself have no metadata; the
architecture is then inferred from the shapes: ``version`` from ``conv1/W`` (96x3x7x7 is
1_0, 64x3x3x3 is 1_1), ``num_classes`` from ``conv10/W``, ``bypass="complex"`` when
``fireN/bypass/W`` exist.  **Not inferable** from the shapes (no parameters differ):
conv10's padding (Caffe's v1.0 uses 1) and the identity bypass ("simple" vs "none"); they
are taken from ``variant=`` when given, else ``final_conv_padding=0``, ``bypass="none"``.
Metadata of such a file: ``preprocessing="none"`` (unknown), ``source="chainer npz"``.

A chain saved inside a wrapper (``L.Classifier`` -> ``predictor/conv1/W``, trainer
snapshots -> ``updater/model:main/predictor/...``) is found by its unique ``.../conv1/W``
key; members outside that prefix are ignored (but still checked).

Safety: ``.npy`` headers are parsed by ``numpy.lib.format`` (a Python literal, never a
pickle) and object arrays (a pickled payload) are refused from the header, without their
data being read; every zip member's sizes are checked against the file size (the one zip
guard, :func:`ports.formats._io.check_zip_member`), every header's shape against its member's size,
and every name and shape against the spec, before any array is allocated.  Float16/32/64
parameters are accepted and converted to float32.
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..spec import Variant
from ._io import atomic_write, check_zip_member, zip_members
from .canonical import Weights, infer_variant, key_problems, meta_variant, string_meta

NAME = "chainer"
META_KEY = "squeezenet_meta"
PARAM_SUFFIX = {"weight": "W", "bias": "b"}

MAX_MEMBERS = 4096
MAX_HEADER = 65536            # .npy header (numpy itself refuses more than 10000 by default)
MAX_META = 1 << 20            # characters of the metadata JSON
_FLOAT_DESCR = re.compile(r"^[<>=|]?f(2|4|8)$")
_TEXT_DESCR = re.compile(r"^[<>=|]?U(\d+)$")
_NPY = np.lib.format
# numpy >= 1.24 takes max_header_size (and refuses headers above 10000 bytes without it)
_HEADER_LIMIT = ({"max_header_size": MAX_HEADER}
                 if "max_header_size" in inspect.signature(_NPY.read_array).parameters else {})
_HEADER_READERS = {(1, 0): _NPY.read_array_header_1_0, (2, 0): _NPY.read_array_header_2_0}


# --- key table ----------------------------------------------------------------------------
def chainer_key(canonical: str) -> str:
    """``fire2.squeeze.weight`` -> ``fire2/squeeze/W``."""
    module, param = canonical.rsplit(".", 1)
    return module.replace(".", "/") + "/" + PARAM_SUFFIX[param]


def key_table(variant: Variant) -> dict[str, str]:
    """Canonical name -> Chainer serializer path, for every parameter of ``variant``."""
    return {name: chainer_key(name) for name in variant.params()}


# --- reading ------------------------------------------------------------------------------
def read(path, *, variant: Variant | None = None) -> Weights:
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        return _decode(f, size, variant=variant)


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    """:func:`read` from bytes."""
    return _decode(io.BytesIO(blob), len(blob), variant=variant)


def _decode(f, size: int, *, variant: Variant | None) -> Weights:
    try:
        archive = zipfile.ZipFile(f)
    except Exception as e:  # BadZipFile, OSError, struct/Unicode errors on a damaged file
        raise WeightsError(f"not an .npz (zip) archive: {type(e).__name__}: {e}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise WeightsError(f"{len(infos)} archive members, more than {MAX_MEMBERS}")
        zip_members(infos)  # no name that points out of the archive
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise WeightsError(f"archive member {info.filename!r} is not an .npy array")
            key = info.filename[:-4]
            if key in members:
                raise WeightsError(f"key {key!r} appears twice in the archive")
            check_zip_member(info, size, f"key {key!r}: member")
            members[key] = info

        headers = {key: _read_header(archive, info, key)
                   for key, info in members.items()}

        meta: dict | None = None
        if META_KEY in members:
            meta = _read_meta(archive, members[META_KEY], headers[META_KEY])

        prefix = _prefix(members)
        params = {key[len(prefix):]: key for key in members
                  if key != META_KEY and key.startswith(prefix)}
        for full in params.values():
            if not _FLOAT_DESCR.match(headers[full][0].str):
                raise WeightsError(f"key {full!r}: dtype {headers[full][0].str!r}, expected "
                                   "float16/32/64")
        shapes = {key: headers[full][1] for key, full in params.items()}
        if meta is None:
            meta = _infer_meta(shapes, variant)
        target = variant or meta_variant(meta, what=META_KEY)
        # Every name and shape against the spec before any array is read.
        _check_shapes(shapes, target, prefix)
        reverse = {v: k for k, v in key_table(target).items()}
        tensors = {reverse[key]: np.array(_read_array(archive, members[full], full),
                                          dtype=np.float32, order="C")
                   for key, full in params.items()}  # native-endian, writable copies
    return Weights(tensors, meta)


def _check_shapes(shapes: dict, variant: Variant, prefix: str) -> None:
    spec = variant.params()
    table = key_table(variant)
    reverse = {v: k for k, v in table.items()}
    problems = key_problems(shapes, {table[name]: shape for name, shape in spec.items()},
                            label=lambda k: f"{prefix + k!r}"
                            + (f" ({reverse[k]})" if k in reverse else ""))
    if problems:
        raise WeightsError(f"does not match SqueezeNet {variant.id}: " + "; ".join(problems))


class _Bounded:
    """A member's stream that refuses to read past ``limit`` bytes (a ``.npy`` header length
    is read before it is checked) and counts what it has read."""

    def __init__(self, stream, limit: int, what: str) -> None:
        self.stream, self.limit, self.what, self.pos = stream, limit, what, 0

    def read(self, n: int = -1) -> bytes:
        if n < 0 or self.pos + n > self.limit:
            raise ValueError(f"{self.what} goes past {self.limit} bytes")
        data = self.stream.read(n)
        self.pos += len(data)
        return data


def _parse_member(archive, info, key: str, parse, limit: int, what: str):
    """``parse(stream)`` of member ``info`` read through :class:`_Bounded` (``limit``
    bytes); numpy's and zipfile's errors become a :class:`WeightsError`."""
    try:
        with archive.open(info) as stream:
            return parse(_Bounded(stream, limit, what))
    except WeightsError:
        raise
    except Exception as e:  # ValueError (numpy), BadZipFile (CRC), zlib.error, EOFError ...
        raise WeightsError(f"key {key!r}: {type(e).__name__}: {e}"[:300]) from None


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str):
    """(dtype, shape) of one ``.npy`` member, checked against the member's size; the data
    itself is not read."""
    def parse(stream):
        version = _NPY.read_magic(stream)
        if version not in _HEADER_READERS:
            raise WeightsError(f"key {key!r}: .npy format version {version} not supported")
        shape, _fortran, dtype = _HEADER_READERS[version](stream, **_HEADER_LIMIT)
        return shape, dtype, stream.pos

    shape, dtype, offset = _parse_member(archive, info, key, parse, MAX_HEADER + 12,
                                         ".npy header")
    if dtype.hasobject or dtype.fields is not None:
        raise WeightsError(f"key {key!r}: object (pickled) or structured array refused "
                           f"(dtype {dtype.str!r}); it was not unpickled")
    if len(shape) > 8 or not all(type(d) is int and 0 <= d < 2**40 for d in shape):
        raise WeightsError(f"key {key!r}: shape {shape!r} is not a tuple of non-negative ints")
    nbytes = math.prod(shape) * dtype.itemsize
    if offset + nbytes != info.file_size:
        raise WeightsError(f"key {key!r}: shape {list(shape)} of {dtype.str} needs {nbytes} bytes, "
                           f"the member holds {info.file_size - offset}")
    return dtype, shape


def _read_array(archive, info, key: str, convert=np.asarray):
    """``convert`` of the array of a member whose header :func:`_read_header` checked."""
    def parse(stream):
        return convert(_NPY.read_array(stream, allow_pickle=False, **_HEADER_LIMIT))

    return _parse_member(archive, info, key, parse, info.file_size, ".npy member")


def _read_meta(archive, info, header) -> dict:
    dtype, shape = header
    m = _TEXT_DESCR.match(dtype.str)
    if not m or shape != () or not 0 < int(m.group(1)) <= MAX_META:
        raise WeightsError(f"key {META_KEY!r}: expected a 0-d unicode string, got {dtype.str} "
                           f"shape {list(shape)}")
    text = _read_array(archive, info, META_KEY, lambda a: str(a[()]))  # may not decode
    return string_meta(text, f"key {META_KEY!r}", limit=MAX_META)


def _prefix(members: dict) -> str:
    """'' for a bare chain, else the unique path that ends in ``conv1/W``."""
    if "conv1/W" in members:
        return ""
    found = [k[:-len("conv1/W")] for k in members if k.endswith("/conv1/W")]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(sorted(k for k in members if k != META_KEY)[:8])
    if not found:
        raise WeightsError(f"missing key 'conv1/W': not a SqueezeNet chain (keys: {keys} ...)")
    raise WeightsError(f"several chains in one file ({', '.join(p + 'conv1/W' for p in found)})")


def _infer_meta(shapes: dict, variant: Variant | None) -> dict:
    """Architecture from the header shapes (see the module docstring) or ``variant``."""
    if variant is None:
        complex_ = any(k.endswith("/bypass/W") for k in shapes)
        variant = infer_variant(shapes.get("conv1/W"), shapes.get("conv10/W"),
                                names=("'conv1/W'", "'conv10/W'"),
                                bypass="complex" if complex_ else "none")
    return {**variant.to_meta(), "preprocessing": "none", "source": "chainer npz"}


# --- writing ------------------------------------------------------------------------------
def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def encode(weights: Weights, *, compression: bool = True) -> bytes:
    """The ``.npz`` bytes: parameters (float32, in spec order) then the metadata entry;
    deflated like ``save_npz``'s default, with fixed timestamps (reproducible bytes)."""
    table = key_table(weights.variant)
    entries = [(table[name], np.ascontiguousarray(weights.tensors[name], dtype="<f4"))
               for name in table]
    entries.append((META_KEY, np.array(json.dumps(weights.meta, sort_keys=True))))
    method = zipfile.ZIP_DEFLATED if compression else zipfile.ZIP_STORED
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=method, allowZip64=True) as archive:
        for key, arr in entries:
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            info.external_attr = 0o644 << 16
            archive.writestr(info, _npy(arr))
    return buf.getvalue()


def write(weights: Weights, path, *, overwrite: bool = True,
          compression: bool = True) -> list[Path]:
    return [atomic_write(path, encode(weights, compression=compression), overwrite=overwrite)]
