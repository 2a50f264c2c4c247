"""PyTorch's zip checkpoint container, read and written without torch and without running
any code from the file.

``torch.save`` (since 1.6) writes an uncompressed zip archive::

    NAME/data.pkl                 pickle (protocol 2) of the object, tensors by reference
    NAME/data/KEY                 raw little-endian bytes of one storage
    NAME/byteorder                "little" (absent in old files: little)
    NAME/version                  "3\\n"
    NAME/.format_version, NAME/.storage_alignment, NAME/.data/serialization_id

A tensor in ``data.pkl`` is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks[, metadata])`` whose ``storage`` is a persistent id
``("storage", torch.FloatStorage, KEY, "cpu", numel)``.

:class:`RestrictedUnpickler` resolves only the globals a state dict needs, each to a
harmless builder of this module (never to torch's own function), and refuses every other
global with :class:`ports.errors.WeightsError` naming it: ``os.system``, ``builtins.eval``,
``subprocess.Popen`` ... are never even imported.  Storage numels, offsets, sizes and strides
are checked against the zip records' sizes before anything is allocated.

:func:`dumps_state_dict` writes the same opcodes ``torch.save`` emits for a state dict, so
``torch.load(path, weights_only=True)`` accepts the file.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import os
import pickle
import pickletools
import re
import struct
import zipfile
from collections import OrderedDict
from typing import Any, Callable, Mapping

import numpy as np

from ..errors import WeightsError
from ._io import ZIP_ERRORS, read_zip_member, zip_error, zip_members
from .canonical import widen_bfloat16

MAX_FILE_BYTES = 2 * 1024**3      # a checkpoint bigger than this is refused
MAX_PICKLE_BYTES = 64 * 1024**2   # data.pkl
MAX_RECORDS = 100_000
MAX_NDIM = 16
MAX_DIM = 2**48                   # no tensor dimension or stride is larger
ALIGNMENT = 64
# Rebuilt tensors are copies; all of them together may hold at most this many times the
# file's size (plus TENSOR_SLACK bytes) - tied weights share a storage, but a pickle
# that rebuilds one storage thousands of times is a memory bomb.
TENSOR_BUDGET_RATIO = 8
TENSOR_SLACK = 64 * 1024**2

# torch.<Name>Storage -> NumPy dtype of one element (little-endian)
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": np.dtype("<u2"),   # decoded by shifting into float32's high half
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


class _Marker:
    """A storage type named in the pickle (``torch.FloatStorage``): inert, not callable."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __setstate__(self, state):  # BUILD on a marker
        raise WeightsError(f"pickle tries to set state on torch.{self.name}")

    def __repr__(self) -> str:
        return f"torch.{self.name}"


class _Storage:
    """One storage record, already read and size-checked: a flat NumPy array."""

    __slots__ = ("key", "array", "charge")

    def __init__(self, key: str, array: np.ndarray,
                 charge: Callable[[int], None] = lambda nbytes: None) -> None:
        self.key, self.array = key, array
        self.charge = charge  # called with the bytes of each tensor copied out of it

    def __setstate__(self, state):
        raise WeightsError("pickle tries to set state on a storage")


class Tensor:
    """A rebuilt tensor: ``array`` is a fresh C-contiguous NumPy copy."""

    __slots__ = ("array", "storage_dtype")

    def __init__(self, array: np.ndarray, storage_dtype: str) -> None:
        self.array, self.storage_dtype = array, storage_dtype

    def __setstate__(self, state):
        raise WeightsError("pickle tries to set state on a tensor")

    def __repr__(self) -> str:
        return f"Tensor({self.storage_dtype}, shape={list(self.array.shape)})"


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> Tensor:
    """Bounds-checked strided view of ``storage`` copied out (torch's argument order)."""
    if not isinstance(storage, _Storage):
        raise WeightsError(f"tensor: storage argument is {type(storage).__name__}, "
                           "expected a storage persistent id")
    if not (isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) <= MAX_NDIM
            and all(_is_int(s) and 0 <= s <= MAX_DIM for s in size)
            and all(_is_int(s) and 0 <= s <= MAX_DIM for s in stride)):
        raise WeightsError(f"tensor: bad size {size!r:.120} / stride {stride!r:.120} "
                           f"(expected at most {MAX_NDIM} dims, each 0..{MAX_DIM})")
    if not _is_int(storage_offset) or not 0 <= storage_offset <= MAX_DIM:
        raise WeightsError(f"tensor: bad storage offset {storage_offset!r:.60}")
    flat = storage.array
    count = math.prod(size)
    if count:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise WeightsError(
                f"tensor of size {list(size)}, stride {list(stride)}, offset {storage_offset} "
                f"reaches element {last} of storage {storage.key!r}, which has {flat.size}")
        if count > max(flat.size, 1) * 64:  # broadcast views (stride 0) must stay small
            raise WeightsError(f"tensor of size {list(size)} is {count} elements from a "
                               f"storage of {flat.size}")
        storage.charge(count * flat.itemsize)
        view = np.lib.stride_tricks.as_strided(
            flat[storage_offset:], shape=size,
            strides=tuple(s * flat.itemsize for s in stride), writeable=False)
        array = np.ascontiguousarray(view)
    else:
        if math.prod(n for n in size if n) > MAX_DIM:
            raise WeightsError(f"tensor of size {list(size)}: empty, but its other dimensions "
                               f"multiply to more than {MAX_DIM}")
        array = np.zeros(size, flat.dtype)
    return Tensor(array, storage.array.dtype.name)


def _rebuild_tensor(storage, storage_offset, size, stride) -> Tensor:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None) -> Tensor:
    if not isinstance(data, Tensor):
        raise WeightsError(f"parameter: data is {type(data).__name__}, expected a tensor")
    return data


def _ordered_dict(*args) -> OrderedDict:
    """``collections.OrderedDict()`` as torch pickles it: no arguments (items follow)."""
    if args:
        raise WeightsError("collections.OrderedDict called with arguments")
    return OrderedDict()


class _Builder:
    """What an allowed global resolves to: calls one builder of this module and nothing
    else; no attribute of it can be set by the pickle (a plain function's ``__defaults__``
    could be, through BUILD)."""

    __slots__ = ("_fn", "_name")

    def __init__(self, fn: Callable, name: str) -> None:
        self._fn, self._name = fn, name

    def __call__(self, *args):
        return self._fn(*args)

    def __setstate__(self, state):
        raise WeightsError(f"pickle tries to set state on {self._name}")

    def __repr__(self) -> str:
        return self._name


# (module, name) -> what it resolves to.  Nothing else resolves.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Builder(_ordered_dict, "collections.OrderedDict"),
    **{("torch._utils", name): _Builder(fn, f"torch._utils.{name}") for name, fn in [
        ("_rebuild_tensor_v2", _rebuild_tensor_v2), ("_rebuild_tensor", _rebuild_tensor),
        ("_rebuild_parameter", _rebuild_parameter),
        ("_rebuild_parameter_with_state", _rebuild_parameter)]},
    **{("torch", name): _Marker(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch checkpoint's ``data.pkl``; ``storage(key, dtype, numel)`` returns
    the flat array of one storage record (checked by the caller)."""

    def __init__(self, data: bytes, storage: Callable[[str, np.dtype, int], np.ndarray],
                 tensor_budget: int | None = None):
        super().__init__(io.BytesIO(data))
        self._storage = storage
        self._cache: dict[str, _Storage] = {}
        self._budget = tensor_budget

    def _charge(self, nbytes: int) -> None:
        if self._budget is None:
            return
        if nbytes > self._budget:
            raise WeightsError(f"the pickle rebuilds more tensor data than the file's size "
                               f"allows ({TENSOR_BUDGET_RATIO}x it plus {TENSOR_SLACK} bytes): "
                               "storages copied out over and over")
        self._budget -= nbytes

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names (protocol 2)
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            raise WeightsError(f"pickle refers to the global {module}.{name}, which a weights "
                               "file never needs; refusing to load it (nothing was run)") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsError(f"unsupported persistent id {pid!r:.80}")
        _, kind, key, location, numel = pid
        if not isinstance(kind, _Marker):
            raise WeightsError(f"persistent id names storage type {kind!r:.60}")
        if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,64}", key):
            raise WeightsError(f"bad storage key {key!r:.80}")
        if not isinstance(location, str) or not _is_int(numel) or numel < 0:
            raise WeightsError(f"bad persistent id {pid!r:.120}")
        dtype = STORAGE_DTYPES[kind.name]
        cached = self._cache.get(key)
        if cached is not None:
            if cached.array.dtype != dtype or cached.array.size != numel:
                raise WeightsError(f"storage {key!r} referenced as two different types/sizes")
            return cached
        self._cache[key] = _Storage(key, self._storage(key, dtype, numel), self._charge)
        return self._cache[key]


# --- reading the zip container -------------------------------------------------------------
def _to_float32(t: Tensor) -> np.ndarray:
    return widen_bfloat16(t.array) if t.storage_dtype == "uint16" else t.array


def load_zip(path_or_bytes) -> tuple[Any, dict[str, bytes]]:
    """Unpickle a torch zip checkpoint.  Returns ``(object, extra records)`` where tensors are
    :class:`Tensor` and extra records are the other small files of the archive (by name
    relative to the archive folder).  Any problem raises :class:`WeightsError`."""
    if isinstance(path_or_bytes, (bytes, bytearray)):
        source: Any = io.BytesIO(path_or_bytes)
        size = len(path_or_bytes)
    else:
        try:
            source = open(path_or_bytes, "rb")  # noqa: SIM115 - closed below
        except OSError as e:
            raise WeightsError(f"cannot open: {e.strerror or e}") from None
        size = os.fstat(source.fileno()).st_size
    try:
        if size > MAX_FILE_BYTES:
            raise WeightsError(f"file is {size} bytes, more than the {MAX_FILE_BYTES} allowed")
        head = source.read(4)
        source.seek(0)
        if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
            raise WeightsError("legacy (pre-1.6, non-zip) torch serialization is not supported; "
                               "re-save it with torch>=1.6 (torch.save writes the zip format)")
        if head != b"PK\x03\x04":
            raise WeightsError("not a zip archive (torch.save's format); first bytes "
                               f"{head!r}")
        try:
            archive = zipfile.ZipFile(source)
        except ZIP_ERRORS as e:
            raise WeightsError(f"bad zip archive: {zip_error(e)}") from None
        with archive:
            return _load_archive(archive, size)
    finally:
        source.close()


def check_pickle(data: bytes) -> None:
    """Walk the opcodes of ``data`` without building anything: every length field is checked
    against the bytes present (the C unpickler allocates a BINBYTES/BINUNICODE's declared
    length before reading it), and memo indices must count up as a pickler numbers them
    (it sizes its memo table by the largest index).  Raises ``ValueError`` on a malformed
    pickle."""
    puts = 0
    for op, arg, pos in pickletools.genops(io.BytesIO(data)):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
            if not isinstance(arg, int) or not 0 <= arg <= puts + 1024:
                raise ValueError(f"memo index {arg!r:.40} at byte {pos} after {puts} "
                                 "memo entries")
            puts += 1
        elif op.name == "MEMOIZE":
            puts += 1


def _load_archive(archive: zipfile.ZipFile, size: int) -> tuple[Any, dict[str, bytes]]:
    infos = archive.infolist()
    zip_members(infos, what="record", limit=MAX_RECORDS)  # names safe, none twice
    pkls = [i for i in infos if i.filename.endswith("/data.pkl")
            and i.filename.count("/") == 1]
    if not pkls:
        names = {i.filename.split("/", 1)[-1] for i in infos}
        if "constants.pkl" in names:
            raise WeightsError("this is a TorchScript archive (torch.jit.save), not a state dict; "
                               "save model.state_dict() with torch.save instead")
        raise WeightsError("archive has no NAME/data.pkl record: not a torch.save checkpoint")
    if len(pkls) > 1:
        raise WeightsError("archive has more than one data.pkl")
    prefix = pkls[0].filename[: -len("data.pkl")]
    by_name = {i.filename: i for i in infos}
    budget = [size * 4 + 1024]  # declared uncompressed bytes we are willing to read

    def read(info: zipfile.ZipInfo, limit: int) -> bytes:
        """The bytes of one record, every declared size checked before anything is read."""
        data = read_zip_member(archive, info, size, f"record {info.filename}",
                               limit=min(limit, budget[0]))
        budget[0] -= len(data)
        return data

    extras: dict[str, bytes] = {}
    for info in infos:
        rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
        if rel and not rel.startswith("data/") and rel != "data.pkl" and info.file_size < 65536:
            extras[rel] = read(info, 65536)
    byteorder = extras.get("byteorder", b"little").decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
        raise WeightsError(f"byteorder record says {byteorder!r}")

    def storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
        info = by_name.get(f"{prefix}data/{key}")
        if info is None:
            raise WeightsError(f"storage {key!r} has no record {prefix}data/{key}")
        need = numel * dtype.itemsize
        if info.file_size != need:
            raise WeightsError(f"storage {key!r}: {numel} x {dtype.itemsize} bytes = {need}, "
                               f"but its record holds {info.file_size}")
        raw = read(info, size * 4 + 1024)
        stored = dtype.newbyteorder(">") if byteorder == "big" else dtype
        return np.frombuffer(raw, dtype=stored).astype(dtype)

    data = read(pkls[0], MAX_PICKLE_BYTES)
    try:
        check_pickle(data)
    except (ValueError, EOFError, IndexError, KeyError, TypeError, struct.error,
            OverflowError, RecursionError) as e:
        raise WeightsError(f"data.pkl is not a valid pickle: {type(e).__name__}: "
                           f"{e}"[:300]) from None
    unpickler = RestrictedUnpickler(data, storage,
                                    tensor_budget=size * TENSOR_BUDGET_RATIO + TENSOR_SLACK)
    try:
        obj = unpickler.load()
    except WeightsError:
        raise
    except (pickle.UnpicklingError, EOFError, IndexError, KeyError, TypeError, ValueError,
            AttributeError, RecursionError, OverflowError, struct.error) as e:
        raise WeightsError(f"data.pkl: {type(e).__name__}: {e}"[:300]) from None
    return obj, extras


def tensors_to_float32(obj: Mapping) -> dict[str, np.ndarray]:
    """``{key: Tensor}`` -> ``{key: float32 array}`` (float16/bfloat16 exactly; float64
    rounded); non-tensor and non-float entries are refused by the caller."""
    return {k: _to_float32(v).astype(np.float32) for k, v in obj.items()}


# --- writing ---------------------------------------------------------------------------------
class _Pickle:
    """Emits pickle protocol-2 opcodes by hand (no object of ours is ever pickled)."""

    def __init__(self) -> None:
        self.out = bytearray(b"\x80\x02")            # PROTO 2

    def global_(self, module: str, name: str) -> None:
        self.out += b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    def string(self, s: str) -> None:
        raw = s.encode("utf-8")
        self.out += b"X" + struct.pack("<I", len(raw)) + raw   # BINUNICODE

    def int_(self, v: int) -> None:
        if 0 <= v < 256:
            self.out += b"K" + struct.pack("<B", v)            # BININT1
        elif 0 <= v < 65536:
            self.out += b"M" + struct.pack("<H", v)            # BININT2
        elif -(2**31) <= v < 2**31:
            self.out += b"J" + struct.pack("<i", v)            # BININT
        else:
            raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
            self.out += b"\x8a" + struct.pack("<B", len(raw)) + raw  # LONG1

    def tuple_(self, items) -> None:
        self.out += b"("                                       # MARK
        for v in items:
            self.int_(v)
        self.out += b"t"                                       # TUPLE

    def op(self, code: bytes) -> None:
        self.out += code


def dumps_state_dict(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, list[bytes]]:
    """``data.pkl`` bytes of an ``OrderedDict`` of float32 tensors, as ``torch.save`` writes
    it, and the storages' bytes (storage ``i`` holds the ``i``-th tensor)."""
    p = _Pickle()
    p.global_("collections", "OrderedDict")
    p.op(b")R")                                               # EMPTY_TUPLE, REDUCE
    p.op(b"(")                                                # MARK for SETITEMS
    storages: list[bytes] = []
    for i, (name, arr) in enumerate(arrays.items()):
        arr = np.ascontiguousarray(arr, dtype="<f4")
        shape = arr.shape
        stride = tuple(int(math.prod(shape[d + 1:])) for d in range(len(shape)))
        p.string(name)
        p.global_("torch._utils", "_rebuild_tensor_v2")
        p.op(b"(")                                            # MARK: args
        p.op(b"(")                                            # MARK: persistent id
        p.string("storage")
        p.global_("torch", "FloatStorage")
        p.string(str(i))
        p.string("cpu")
        p.int_(arr.size)
        p.op(b"tQ")                                           # TUPLE, BINPERSID
        p.int_(0)                                             # storage offset
        p.tuple_(shape)
        p.tuple_(stride)
        p.op(b"\x89")                                         # NEWFALSE: requires_grad
        p.global_("collections", "OrderedDict")
        p.op(b")R")                                           # backward_hooks
        p.op(b"tR")                                           # TUPLE, REDUCE
        storages.append(arr.tobytes())
    p.op(b"u.")                                               # SETITEMS, STOP
    return bytes(p.out), storages


def write_zip(f, archive: str, pickle_bytes: bytes, storages: list[bytes],
              extra: Mapping[str, bytes] | None = None, serialization_id: str = "0" * 40
              ) -> None:
    """The records ``torch.save`` writes, in its order, storages 64-byte aligned."""
    records: list[tuple[str, bytes]] = [
        ("data.pkl", pickle_bytes), (".format_version", b"1"),
        (".storage_alignment", str(ALIGNMENT).encode()), ("byteorder", b"little")]
    records += [(f"data/{i}", raw) for i, raw in enumerate(storages)]
    records += list((extra or {}).items())
    records += [("version", b"3\n"), (".data/serialization_id", serialization_id.encode())]
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
        for name, raw in records:
            info = zipfile.ZipInfo(f"{archive}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 0
            offset = f.tell()  # where this local header starts
            header = 30 + len(info.filename.encode())
            pad = -(offset + header + 4) % ALIGNMENT
            # extra field 'FB' (id 0x4246, torch's padding id) so the data starts aligned
            info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad
            z.writestr(info, raw)
