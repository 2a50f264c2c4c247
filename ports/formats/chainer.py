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

Safety: members are parsed here, never with pickle.  Object arrays (a pickled payload)
are refused without being read; every zip member's sizes are checked against the file
size and every ``.npy`` header's shape against the member's size before any array is
allocated.  Float16/32/64 parameters are accepted and converted to float32.
"""

from __future__ import annotations

import ast
import io
import json
import math
import os
import re
import zipfile
from pathlib import Path

import numpy as np

from .. import spec as S
from .._io import atomic_write
from ..canonical import Weights
from ..errors import WeightsError
from ..spec import Variant

NAME = "chainer"
EXTENSIONS = (".npz",)
META_KEY = "squeezenet_meta"
PARAM_SUFFIX = {"weight": "W", "bias": "b"}

MAX_MEMBERS = 4096
MAX_HEADER = 65536            # .npy header (numpy itself refuses more than 10000 by default)
MAX_META = 1 << 20            # characters of the metadata JSON
DEFLATE_MAX_RATIO = 1032      # deflate cannot expand more than ~1032:1
_NPY_MAGIC = b"\x93NUMPY"
_FLOAT_DESCR = re.compile(r"^[<>=|]?f(2|4|8)$")
_TEXT_DESCR = re.compile(r"^[<>=|]?U(\d+)$")
_FLOAT_CODES = {"f2": "float16", "f4": "float32", "f8": "float64"}


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
        return _decode(f, size, path=path, variant=variant)


def decode(blob: bytes, *, path=None, variant: Variant | None = None) -> Weights:
    """:func:`read` from bytes."""
    return _decode(io.BytesIO(blob), len(blob), path=path, variant=variant)


def _decode(f, size: int, *, path, variant: Variant | None) -> Weights:
    def fail(reason: str) -> WeightsError:
        return WeightsError(reason, path=path, format=NAME)

    try:
        archive = zipfile.ZipFile(f)
    except Exception as e:  # BadZipFile, OSError, struct/Unicode errors on a damaged file
        raise fail(f"not an .npz (zip) archive: {type(e).__name__}: {e}") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_MEMBERS:
            raise fail(f"{len(infos)} archive members, more than {MAX_MEMBERS}")
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise fail(f"archive member {info.filename!r} is not an .npy array")
            key = info.filename[:-4]
            if key in members:
                raise fail(f"key {key!r} appears twice in the archive")
            _check_sizes(info, key, size, fail)
            members[key] = info

        headers = {key: _read_header(archive, info, key, fail)
                   for key, info in members.items()}

        meta: dict | None = None
        if META_KEY in members:
            meta = _read_meta(archive, members[META_KEY], headers[META_KEY], fail)

        prefix = _prefix(members, fail)
        params = {key[len(prefix):]: key for key in members
                  if key != META_KEY and key.startswith(prefix)}
        for full in params.values():
            if not _FLOAT_DESCR.match(headers[full][0]):
                raise fail(f"key {full!r}: dtype {headers[full][0]!r}, expected float16/32/64")
        shapes = {key: headers[full][2] for key, full in params.items()}
        if meta is None:
            meta = _infer_meta(shapes, variant, fail)
        try:
            target = variant or Variant.from_meta(meta)
        except ValueError as e:
            raise fail(f"{META_KEY}: {e}") from None
        # Every name and shape against the spec before any array is read.
        _check_shapes(shapes, target, prefix, fail)
        reverse = {v: k for k, v in key_table(target).items()}
        tensors = {}
        for key, full in params.items():
            descr, fortran, shape, offset = headers[full]
            tensors[reverse[key]] = _read_data(archive, members[full], full, descr, fortran,
                                               shape, offset, fail)
    return Weights(tensors, meta)


def _check_shapes(shapes: dict, variant: Variant, prefix: str, fail) -> None:
    spec = variant.params()
    table = key_table(variant)
    problems = []
    missing = [f"{prefix + table[name]!r} ({name})" for name in spec
               if table[name] not in shapes]
    wanted = set(table.values())
    unexpected = [repr(prefix + k) for k in shapes if k not in wanted]
    if missing:
        problems.append("missing keys: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected keys: " + ", ".join(sorted(unexpected)))
    for name, key in table.items():
        if key in shapes and tuple(shapes[key]) != spec[name]:
            problems.append(f"key {prefix + key!r} ({name}): expected shape "
                            f"{list(spec[name])}, got {list(shapes[key])}")
    if problems:
        raise fail(f"does not match SqueezeNet {variant.id}: " + "; ".join(problems))


def _check_sizes(info: zipfile.ZipInfo, key: str, size: int, fail) -> None:
    if info.compress_size > size or info.header_offset + info.compress_size > size:
        raise fail(f"key {key!r}: member claims {info.compress_size} compressed bytes at "
                   f"offset {info.header_offset}, beyond the {size}-byte file")
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise fail(f"key {key!r}: stored member size {info.file_size} != "
                       f"{info.compress_size}")
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        if info.file_size > DEFLATE_MAX_RATIO * info.compress_size + 1024:
            raise fail(f"key {key!r}: member claims {info.file_size} bytes from "
                       f"{info.compress_size} compressed, more than deflate can expand")
    else:
        raise fail(f"key {key!r}: zip compression method {info.compress_type} "
                   "(expected stored or deflated)")


def _read_exact(stream, n: int, key: str, fail) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise fail(f"key {key!r}: member truncated ({len(data)} of {n} bytes)")
    return data


def _read_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, fail):
    """(descr, fortran_order, shape, data offset) of one ``.npy`` member, checked against
    the member's size; the data itself is not read."""
    try:
        with archive.open(info) as stream:
            lead = stream.read(10)
            if len(lead) < 10 or lead[:6] != _NPY_MAGIC:
                raise fail(f"key {key!r}: not a .npy array (bad magic)")
            major = lead[6]
            if major == 1:
                hlen, start, text = int.from_bytes(lead[8:10], "little"), 10, lead[10:]
            elif major in (2, 3):
                more = _read_exact(stream, 2, key, fail)
                hlen, start, text = int.from_bytes(lead[8:10] + more, "little"), 12, b""
            else:
                raise fail(f"key {key!r}: .npy format version {major} not supported")
            if hlen > MAX_HEADER or start + hlen > info.file_size:
                raise fail(f"key {key!r}: .npy header of {hlen} bytes exceeds the member "
                           f"({info.file_size} bytes) or {MAX_HEADER}")
            raw = text + _read_exact(stream, hlen - len(text), key, fail)
    except WeightsError:
        raise
    except Exception as e:  # BadZipFile, zlib.error, bad CRC, encrypted member ...
        raise fail(f"key {key!r}: cannot read the archive member: {type(e).__name__}: {e}") \
            from None
    try:
        header = ast.literal_eval(raw.decode("utf-8" if major == 3 else "latin1").strip())
    except Exception:  # SyntaxError, ValueError, TypeError, RecursionError ...
        raise fail(f"key {key!r}: .npy header is not a Python literal") from None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise fail(f"key {key!r}: .npy header must have exactly descr, fortran_order, shape")
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    if not isinstance(descr, str) or "O" in descr:
        raise fail(f"key {key!r}: object (pickled) or structured array refused "
                   f"(dtype {descr!r}); it was not unpickled")
    if (not isinstance(shape, tuple) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40
                       for d in shape)):
        raise fail(f"key {key!r}: shape {shape!r} is not a tuple of non-negative ints")
    if not isinstance(fortran, bool):
        raise fail(f"key {key!r}: fortran_order {fortran!r} is not a bool")
    try:
        itemsize = np.dtype(descr).itemsize
    except Exception:  # TypeError, ValueError, OverflowError
        raise fail(f"key {key!r}: unknown dtype {descr!r}") from None
    nbytes = math.prod(shape) * itemsize
    if start + hlen + nbytes != info.file_size:
        raise fail(f"key {key!r}: shape {list(shape)} of {descr} needs {nbytes} bytes, "
                   f"the member holds {info.file_size - start - hlen}")
    return descr, fortran, shape, start + hlen


def _member_data(archive, info, key: str, offset: int, fail) -> bytes:
    """The bytes of a member after its ``offset``-byte ``.npy`` header (sizes already
    checked: exactly ``info.file_size - offset`` bytes are read)."""
    try:
        with archive.open(info) as stream:
            _read_exact(stream, offset, key, fail)
            return _read_exact(stream, info.file_size - offset, key, fail)
    except WeightsError:
        raise
    except Exception as e:  # BadZipFile (bad CRC), zlib.error, EOFError ...
        raise fail(f"key {key!r}: cannot read the archive member: {type(e).__name__}: {e}") \
            from None


def _read_data(archive, info, key, descr, fortran, shape, offset, fail) -> np.ndarray:
    arr = np.frombuffer(_member_data(archive, info, key, offset, fail), dtype=np.dtype(descr))
    arr = arr.reshape(shape, order="F" if fortran else "C")
    return np.array(arr, dtype=np.float32, order="C")  # a native-endian, writable copy


def _read_meta(archive, info, header, fail) -> dict:
    descr, fortran, shape, offset = header
    m = _TEXT_DESCR.match(descr)
    if not m or shape != () or not 0 < int(m.group(1)) <= MAX_META:
        raise fail(f"key {META_KEY!r}: expected a 0-d unicode string, got {descr} "
                   f"shape {list(shape)}")
    raw = _member_data(archive, info, META_KEY, offset, fail)
    try:
        meta = json.loads(str(np.frombuffer(raw, dtype=np.dtype(descr))[0]))
    except Exception as e:  # bad code points, not JSON
        raise fail(f"key {META_KEY!r}: not JSON text: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in meta.items()):
        raise fail(f"key {META_KEY!r}: must map strings to strings")
    return meta


def _prefix(members: dict, fail) -> str:
    """'' for a bare chain, else the unique path that ends in ``conv1/W``."""
    if "conv1/W" in members:
        return ""
    found = [k[:-len("conv1/W")] for k in members if k.endswith("/conv1/W")]
    if len(found) == 1:
        return found[0]
    keys = ", ".join(sorted(k for k in members if k != META_KEY)[:8])
    if not found:
        raise fail(f"missing key 'conv1/W': not a SqueezeNet chain (keys: {keys} ...)")
    raise fail(f"several chains in one file ({', '.join(p + 'conv1/W' for p in found)})")


def _infer_meta(shapes: dict, variant: Variant | None, fail) -> dict:
    """Architecture from the header shapes (see the module docstring) or ``variant``."""
    if variant is not None:
        v = variant
    else:
        conv1 = tuple(shapes["conv1/W"])
        versions = [ver for ver in S.VERSIONS
                    if Variant(ver).params()["conv1.weight"] == conv1]
        if not versions:
            raise fail(f"key 'conv1/W': shape {list(conv1)} is neither v1.0's "
                       f"{list(Variant('1_0').params()['conv1.weight'])} nor v1.1's "
                       f"{list(Variant('1_1').params()['conv1.weight'])}")
        if "conv10/W" not in shapes:
            raise fail("missing key 'conv10/W'")
        classes = shapes["conv10/W"][0] if shapes["conv10/W"] else 0
        bypass = "complex" if any(k.endswith("/bypass/W") for k in shapes) else "none"
        try:
            v = Variant(versions[0], int(classes), 0, bypass)
        except ValueError as e:
            raise fail(f"key 'conv10/W': {e}") from None
    return {**v.to_meta(), "preprocessing": "none", "source": "chainer npz"}


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
