"""Orbax checkpoints of a Flax NNX state (``ocp.StandardCheckpointer``), a directory.

What it holds: the state of a :class:`ports.flax.SqueezeNet` exactly as the Flax NNX guides
save it, ``ocp.StandardCheckpointer().save(path, nnx.state(model))``, so that Orbax restores
it into the model's abstract state::

    abstract = nnx.state(nnx.eval_shape(lambda: ports.flax.SqueezeNet(...)))  # no memory
    state = ocp.StandardCheckpointer().restore(path, abstract)
    nnx.update(model, state)

The tree is the NNX state's: for every convolution ``C`` of the spec (``.`` -> ``/`` as in
:mod:`ports.formats.flax`, the same key table)::

    C.weight  ->  ('C', 'kernel', 'value')   HWIO [kh, kw, in, out]
    C.bias    ->  ('C', 'bias', 'value')     [out]

(``value`` is the NNX ``Variable``'s field; a checkpoint of ``nnx.to_pure_dict(state)``,
without it, is read too).  Orbax stores each leaf under its *parameter name*, the keys
joined by ``.``: ``fire2.squeeze.kernel.value``.

Directory layout this codec writes (framework-free), that of ``ocp.Checkpointer(
ocp.PyTreeCheckpointHandler(use_ocdbt=False, use_compression=False))``, Orbax 0.12::

    PATH/_CHECKPOINT_METADATA     JSON: item_handlers, timestamps, custom_metadata
    PATH/_METADATA                JSON: the tree (key path -> key_metadata, value_metadata
                                  {value_type "jax.Array", write_shape}), use_ocdbt false,
                                  use_zarr3 false
    PATH/<param name>/.zarray     zarr v2 array metadata: shape = chunks, dtype "<f4",
                                  compressor null, order "C"
    PATH/<param name>/0.0.0.0     the C-order little-endian float32 bytes (one chunk;
                                  ``0`` for a bias)

No ``_sharding`` file is written (the arrays are restored wherever the target's shardings
say; without any, as NumPy arrays), and no OCDBT database.

Metadata: an Orbax checkpoint of an NNX state holds only arrays.  The canonical metadata
(see :mod:`ports.formats.canonical`) goes into Orbax's own place for it, the ``custom_metadata`` of
``_CHECKPOINT_METADATA`` (``StandardCheckpointer.save(..., custom_metadata=...)``), under the
key ``"squeezenet"``; Orbax keeps it and ignores it on restore.  A checkpoint without it
(e.g. saved by Orbax itself) gets its architecture from ``read(..., variant=...)`` when
given, otherwise from the shapes (:func:`ports.formats.canonical.infer_variant`): the version from
conv1's kernel, ``num_classes`` from conv10's, ``bypass="complex"`` when fire bypass
kernels are present; ``final_conv_padding`` (0) and a simple bypass ("none") cannot be seen
in shapes.  ``preprocessing`` is then ``"none"`` (unknown).

Reading
-------
Framework-free for the layout above (zarr v2, uncompressed, no OCDBT; float32, float64,
float16 or bfloat16, little- or big-endian, any regular chunk grid, C or F order), which is
what this codec writes and what Orbax writes with ``use_ocdbt=False,
use_compression=False``.  Orbax's default layout (an OCDBT database, zstd-compressed chunks)
and zarr v3 arrays are read through Orbax itself (``orbax-checkpoint``, installed with the
``flax`` extra), restored as NumPy arrays; without it they are a :class:`WeightsError`
saying ``pip install "squeezenet-ports[flax]"``.

Every judgement is made before any array is read: the metadata files are bounded JSON, each
tree key must be a plain name (letters, digits, ``_``: no path can leave the directory), the
key paths and every shape must be the spec's, and every file read must be a regular file of
exactly the size its metadata implies.  Nothing is unpickled.

A checkpoint is read only from its own folder: the folder is walked once before anything is
read (:class:`ports.formats._folder.Folder`), and a symbolic link anywhere inside it (a chunk, a
leaf's folder, ``_METADATA``), a FIFO or a device is refused; each file is then opened
without following links and checked to be the file the walk saw.  Orbax, which opens files
itself, is given a private copy of the checked files in a temporary directory, never the
folder itself.

Writing is atomic: the checkpoint is made in a temporary directory beside ``PATH``
(``.NAME.PID.RANDOM.part``) and renamed onto it; an existing ``PATH`` is replaced (with
``overwrite``) only when it is an Orbax checkpoint or an empty directory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..layouts import hwio_to_oihw, oihw_shape_to_hwio, oihw_to_hwio
from ..spec import Variant
from . import canonical
from ._folder import Folder
from ._io import atomic_write_folder
from .canonical import Weights, key_problems
from .flax import key_table as flax_key_table

NAME = "orbax"

CHECKPOINT_METADATA = "_CHECKPOINT_METADATA"
TREE_METADATA = "_METADATA"
OCDBT_MANIFEST = "manifest.ocdbt"
ZARRAY = ".zarray"
METADATA_KEY = "squeezenet"          # in _CHECKPOINT_METADATA's custom_metadata
VALUE = "value"                      # the NNX Variable's field, last key of every path
HANDLER = "orbax.checkpoint._src.handlers.standard_checkpoint_handler.StandardCheckpointHandler"
INSTALL = 'pip install "squeezenet-ports[flax]"'

MAX_JSON = 8 << 20        # bytes of _METADATA / _CHECKPOINT_METADATA (SqueezeNet's: 20 kB)
MAX_ZARRAY = 64 << 10     # bytes of one .zarray
MAX_LEAVES = 4096         # leaves of the tree (SqueezeNet's: at most 60)
MAX_DEPTH = 16            # keys in one path
MAX_NDIM = 8
MAX_CHUNKS = 4096         # chunks of one array
MAX_COPY = 256 << 20      # bytes of a checkpoint copied for Orbax (SqueezeNet's: 5 MB)
_PLAIN = re.compile(r"^[A-Za-z0-9_]{1,128}$")
_DTYPES = {"<f4": "<f4", ">f4": ">f4", "<f8": "<f8", ">f8": ">f8", "<f2": "<f2",
           ">f2": ">f2", "bfloat16": "<u2"}  # zarr v2 dtype -> NumPy dtype of the bytes

__all__ = ["NAME", "key_table", "encode", "read", "write"]


# --- the key table --------------------------------------------------------------------------
def key_table(variant: Variant) -> dict[str, tuple[str, ...]]:
    """Canonical name -> key path of the NNX state (``('conv1', 'kernel', 'value')``)."""
    return {name: (*path.split("/"), VALUE) for name, path in flax_key_table(variant).items()}


def param_name(keys: tuple[str, ...]) -> str:
    """Orbax's name of a leaf, its directory in the checkpoint: the keys joined by ``.``."""
    return ".".join(keys)


# --- writing --------------------------------------------------------------------------------
def _json(obj) -> bytes:
    return json.dumps(obj).encode()


def _zarray(shape: tuple[int, ...]) -> bytes:
    """A zarr v2 ``.zarray`` as TensorStore writes it for Orbax (keys sorted, compact)."""
    return json.dumps({"chunks": list(shape), "compressor": None, "dimension_separator": ".",
                       "dtype": "<f4", "fill_value": None, "filters": None, "order": "C",
                       "shape": list(shape), "zarr_format": 2},
                      separators=(",", ":"), sort_keys=True).encode()


def encode(weights: Weights) -> dict[str, bytes]:
    """The files of a checkpoint of ``weights``: relative path -> bytes (see the module
    docstring), in the NNX state's order."""
    leaves = {}
    for name, keys in key_table(weights.variant).items():
        arr = weights.tensors[name]
        arr = oihw_to_hwio(arr) if name.endswith(".weight") else arr
        leaves[keys] = np.ascontiguousarray(arr, dtype="<f4")
    leaves = dict(sorted(leaves.items()))  # NNX sorts its state's keys at every level
    tree = {str(keys): {"key_metadata": [{"key": k, "key_type": 2} for k in keys],
                        "value_metadata": {"value_type": "jax.Array", "skip_deserialize": False,
                                           "write_shape": list(arr.shape)}}
            for keys, arr in leaves.items()}
    now = time.time_ns()
    files = {CHECKPOINT_METADATA: _json({
        "item_handlers": HANDLER, "metrics": {}, "performance_metrics": {},
        "init_timestamp_nsecs": now, "commit_timestamp_nsecs": now,
        "custom_metadata": {METADATA_KEY: dict(weights.meta)}}),
        TREE_METADATA: _json({"tree_metadata": tree, "use_ocdbt": False, "use_zarr3": False,
                              "store_array_data_equal_to_fill_value": True,
                              "custom_metadata": None})}
    for keys, arr in leaves.items():
        base = param_name(keys)
        files[f"{base}/{ZARRAY}"] = _zarray(arr.shape)
        files[f"{base}/{'.'.join('0' * arr.ndim) or '0'}"] = arr.tobytes()
    return files


def _is_checkpoint(path: Path) -> bool:
    """Whether the existing folder ``path`` may be replaced: an Orbax checkpoint."""
    return bool(set(os.listdir(path)) & {CHECKPOINT_METADATA, TREE_METADATA})


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write the checkpoint directory ``path`` atomically
    (:func:`ports.formats._io.atomic_write_folder`); returns ``[path]``."""
    return [atomic_write_folder(path, lambda: encode(weights), replaceable=_is_checkpoint,
                                noun="an Orbax checkpoint directory", overwrite=overwrite)]


# --- reading: files and metadata --------------------------------------------------------------
def _load_json(folder: Folder, rel: str, limit: int, what: str) -> Any:
    data = folder.read(rel, what, limit=limit)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{what} is not JSON: {type(e).__name__}: {e}"[:300]) from None


def _int_list(value, what: str, *, positive: bool = False) -> tuple[int, ...]:
    low = 1 if positive else 0
    if (not isinstance(value, list) or len(value) > MAX_NDIM
            or not all(type(d) is int and low <= d < 2 ** 40 for d in value)):
        raise WeightsError(f"{what} must be a list of at most {MAX_NDIM} integers >= {low}, "
                           f"got {str(value)[:80]}")
    return tuple(value)


def _tree(folder: Folder) -> tuple[dict[tuple[str, ...], dict], dict]:
    """``_METADATA``: key path -> its value metadata, and the top-level fields."""
    meta = _load_json(folder, TREE_METADATA, MAX_JSON, TREE_METADATA)
    if not isinstance(meta, dict) or not isinstance(meta.get("tree_metadata"), dict):
        raise WeightsError(f"{TREE_METADATA} has no 'tree_metadata' map: not an Orbax PyTree "
                           "checkpoint")
    entries = meta["tree_metadata"]
    if len(entries) > MAX_LEAVES:
        raise WeightsError(f"{TREE_METADATA} lists {len(entries)} leaves, more than {MAX_LEAVES}")
    tree: dict[tuple[str, ...], dict] = {}
    for label, entry in entries.items():
        where = f"{TREE_METADATA} entry {label[:80]!r}"
        keys = entry.get("key_metadata") if isinstance(entry, dict) else None
        if not isinstance(keys, list) or not 0 < len(keys) <= MAX_DEPTH:
            raise WeightsError(f"{where}: key_metadata must be a list of 1 to {MAX_DEPTH} keys")
        path = []
        for k in keys:
            key = k.get("key") if isinstance(k, dict) else None
            if not isinstance(key, str) or not _PLAIN.match(key):
                raise WeightsError(f"{where}: key {str(key)[:40]!r} is not a plain name (letters, "
                                   "digits, '_'): not an NNX state")
            path.append(key)
        value = entry.get("value_metadata", {})
        if tuple(path) in tree:
            raise WeightsError(f"{where}: key path listed twice")
        tree[tuple(path)] = value if isinstance(value, dict) else {}
    if not tree:
        raise WeightsError(f"{TREE_METADATA} lists no arrays")
    return tree, meta


def _our_meta(folder: Folder) -> dict[str, str] | None:
    """The canonical metadata in ``_CHECKPOINT_METADATA``'s ``custom_metadata``, if any."""
    if not folder.exists(CHECKPOINT_METADATA):
        return None
    meta = _load_json(folder, CHECKPOINT_METADATA, MAX_JSON, CHECKPOINT_METADATA)
    if not isinstance(meta, dict):
        raise WeightsError(f"{CHECKPOINT_METADATA} is not a JSON object")
    custom = meta.get("custom_metadata") or {}
    if not isinstance(custom, dict) or METADATA_KEY not in custom:
        return None
    return canonical.string_meta(custom[METADATA_KEY], f"{CHECKPOINT_METADATA} "
                                 f"custom_metadata[{METADATA_KEY!r}]")


def _canonical_paths(tree: dict[tuple[str, ...], Any]) -> dict[str, tuple[str, ...]]:
    """Flax state path (``conv1/kernel``) -> the checkpoint's key path."""
    values = [keys[-1] == VALUE and len(keys) > 1 for keys in tree]
    if any(values) and not all(values):
        raise WeightsError(f"some key paths end in {VALUE!r} (an NNX state) and some do not")
    cut = -1 if all(values) else None
    return {"/".join(keys[:cut]): keys for keys in tree}


# --- reading: the arrays ----------------------------------------------------------------------
def _zarr_header(folder: Folder, keys: tuple[str, ...]) -> dict:
    """The checked ``.zarray`` of the leaf at ``keys``."""
    base = param_name(keys)
    what = f"{base}/{ZARRAY}"
    z = _load_json(folder, what, MAX_ZARRAY, what)
    if not isinstance(z, dict) or z.get("zarr_format") != 2:
        raise WeightsError(f"{what}: not zarr v2 metadata (zarr_format 2)")
    shape = _int_list(z.get("shape"), f"{what}: shape")
    chunks = _int_list(z.get("chunks"), f"{what}: chunks", positive=True)
    if len(chunks) != len(shape):
        raise WeightsError(f"{what}: chunks {list(chunks)} and shape {list(shape)} differ in rank")
    if z.get("dtype") not in _DTYPES:
        raise WeightsError(f"{what}: dtype {str(z.get('dtype'))[:40]!r}, expected one of "
                           f"{', '.join(_DTYPES)}")
    if z.get("filters") not in (None, []):
        raise WeightsError(f"{what}: zarr filters are not supported")
    if z.get("order", "C") not in ("C", "F"):
        raise WeightsError(f"{what}: order {str(z.get('order'))[:20]!r}, expected 'C' or 'F'")
    if z.get("dimension_separator", ".") not in (".", "/"):
        raise WeightsError(f"{what}: dimension_separator must be '.' or '/'")
    return {**z, "shape": shape, "chunks": chunks}


def _zarr_array(folder: Folder, keys: tuple[str, ...], z: dict) -> np.ndarray:
    """The array of a checked, uncompressed ``.zarray`` ``z``, as float32."""
    base = param_name(keys)
    shape, chunks = z["shape"], z["chunks"]
    dtype = np.dtype(_DTYPES[z["dtype"]])
    grid = [math.ceil(s / c) for s, c in zip(shape, chunks)]
    if math.prod(grid) > MAX_CHUNKS:
        raise WeightsError(f"{base}: {math.prod(grid)} chunks, more than {MAX_CHUNKS}")
    out = np.empty(shape, dtype)
    nbytes = math.prod(chunks) * dtype.itemsize
    order = z.get("order", "C")
    for index in np.ndindex(*grid):
        name = z.get("dimension_separator", ".").join(map(str, index)) or "0"
        raw = folder.read(f"{base}/{name}", f"{base}/{name}", exact=nbytes)
        chunk = np.frombuffer(raw, dtype).reshape(chunks, order=order)
        region = tuple(slice(i * c, min((i + 1) * c, s))
                       for i, c, s in zip(index, chunks, shape))
        out[region] = chunk[tuple(slice(0, r.stop - r.start) for r in region)]
    if z["dtype"] == "bfloat16":
        return canonical.widen_bfloat16(out)
    return out.astype(np.float32)


def _orbax():
    """``orbax.checkpoint``, or a WeightsError saying what to install."""
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise WeightsError(f"this checkpoint (an OCDBT database, compressed or zarr v3 arrays: "
                           "Orbax's default layout) is read through Orbax, which cannot be "
                           f"imported ({e}); {INSTALL} installs it") from None
    return ocp


def _orbax_shapes(directory: Path) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Key path -> shape, from Orbax's own metadata of the checkpoint in ``directory`` (a
    private copy of the checked folder: see :func:`_private_copy`)."""
    ocp = _orbax()
    try:
        meta = ocp.PyTreeCheckpointer().metadata(directory)
        meta = getattr(meta, "item_metadata", meta)
        meta = getattr(meta, "tree", meta)
        flat = _flatten(meta)
        return {keys: tuple(int(d) for d in m.shape) for keys, m in flat.items()}
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever Orbax/TensorStore raise on a bad file
        raise WeightsError(f"Orbax cannot read its metadata: {type(e).__name__}: "
                           f"{e}"[:400]) from None


def _flatten(tree, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(_flatten(v, (*prefix, str(k))))
        return out
    return {prefix: tree}


def _orbax_arrays(directory: Path) -> dict[tuple[str, ...], np.ndarray]:
    """Every leaf restored by Orbax as a NumPy array, from ``directory`` (a private copy of
    the checked folder: see :func:`_private_copy`)."""
    ocp = _orbax()
    try:
        import jax

        meta = ocp.PyTreeCheckpointer().metadata(directory)
        meta = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
        args = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), meta)
        restored = ocp.PyTreeCheckpointer().restore(
            directory, args=ocp.args.PyTreeRestore(restore_args=args))
        return {keys: np.asarray(a) for keys, a in _flatten(restored).items()}
    except Exception as e:  # noqa: BLE001 - whatever Orbax/TensorStore raise on a bad file
        raise WeightsError(f"Orbax cannot restore it: {type(e).__name__}: {e}"[:400]) from None


def _variant_of(meta: dict | None, variant: Variant | None,
                shapes: dict[str, tuple[int, ...]]) -> tuple[Variant, dict[str, str]]:
    """The variant and the full canonical metadata (see the module docstring)."""
    meta = dict(meta or {})
    if canonical.has_architecture(meta):
        return canonical.meta_variant(meta), meta
    if variant is not None:
        found, how = variant, f"architecture {variant.id} given by the caller"
    else:
        complex_ = any(p.startswith("fire") and p.endswith("/bypass/kernel") for p in shapes)
        found = canonical.infer_variant(
            shapes.get("conv1/kernel"), shapes.get("conv10/kernel"),
            names=("conv1/kernel", "conv10/kernel"), layout="HWIO",
            bypass="complex" if complex_ else "none")
        how = "architecture inferred from shapes (final_conv_padding and simple bypass " \
              "cannot be)"
    meta = {**found.to_meta(), **meta}
    meta.setdefault("preprocessing", "none")
    meta.setdefault("source", f"orbax checkpoint without {METADATA_KEY} metadata; {how}")
    return found, meta


def _private_copy(folder: Folder, stack: contextlib.ExitStack) -> Path:
    """A copy of the checked folder, made once per read in a temporary directory removed
    when ``stack`` closes: what Orbax (whose TensorStore opens files itself, in C++) reads,
    so that nothing changed in the user's folder after the check can reach it."""
    _orbax()  # first: without Orbax, nothing is copied
    tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="squeezenet-orbax."))
    return folder.private_copy(Path(tmp) / "checkpoint", MAX_COPY)


def read(path, *, variant: Variant | None = None) -> Weights:
    """Canonical weights from the checkpoint directory ``path`` (checked against the spec
    by :func:`ports.formats.read`).  Every file is read through a checked
    :class:`ports.formats._folder.Folder`: a symbolic link, FIFO or device anywhere inside is
    refused."""
    directory = Path(path)
    if not directory.is_dir():
        raise WeightsError("not a directory (an Orbax checkpoint is one)")
    folder = Folder.check(directory)
    if not folder.exists(TREE_METADATA):
        found = folder.listdir()[:8]
        raise WeightsError(f"no {TREE_METADATA} file: not an Orbax PyTree checkpoint (it holds "
                           f"{', '.join(found) if found else 'nothing'})")
    with contextlib.ExitStack() as stack:
        copies: list[Path] = []

        def private() -> Path:  # the copy Orbax reads, made on first need
            if not copies:
                copies.append(_private_copy(folder, stack))
            return copies[0]

        return _read(folder, variant, private)


def _read(folder: Folder, variant: Variant | None, private) -> Weights:
    tree, top = _tree(folder)
    meta = _our_meta(folder)
    paths = _canonical_paths(tree)
    plain = not folder.exists(OCDBT_MANIFEST) and not top.get("use_zarr3")
    headers: dict[str, dict] = {}

    def shape(p: str):  # the shape the checkpoint gives the leaf at state path p
        if p not in paths:
            return None
        if p not in headers:
            headers[p] = _zarr_header(folder, paths[p])
        return headers[p]["shape"]

    if plain:
        plain = all(shape(p) is None or headers[p].get("compressor") is None
                    for p in ("conv1/kernel", "conv10/kernel"))
    if plain:
        shapes = {p: shape(p) for p in ("conv1/kernel", "conv10/kernel") if p in paths}
        shapes.update(dict.fromkeys(set(paths) - set(shapes)))
    else:
        by_keys = _orbax_shapes(private())
        shapes = {p: by_keys.get(keys) for p, keys in paths.items()}
    v, meta = _variant_of(meta, variant, shapes)
    table = flax_key_table(v)
    spec = v.params()
    expected = {key: _hwio_shape(name, spec[name]) for name, key in table.items()}
    noun = ("key path", "key paths")
    problems = key_problems(list(paths), list(expected), noun=noun)  # names first: no reads
    if plain and not problems:
        shapes = {p: shape(p) for p in paths}
        if any(z.get("compressor") is not None for z in headers.values()):
            plain = False
            by_keys = _orbax_shapes(private())
            shapes = {p: by_keys.get(keys) for p, keys in paths.items()}
    if not problems:
        problems = key_problems(shapes, expected, noun=noun,
                                note=lambda k: " (HWIO)" if k.endswith("/kernel") else "")
    if problems:
        raise WeightsError(f"does not match SqueezeNet {v.id}: " + "; ".join(problems))
    if plain:
        arrays = {p: _zarr_array(folder, paths[p], headers[p]) for p in table.values()}
    else:
        restored = _orbax_arrays(private())
        arrays = {p: restored.get(paths[p]) for p in table.values()}
        for p, a in arrays.items():
            if a is None or a.dtype.kind != "f" or a.shape != tuple(expected[p]):
                got = "nothing" if a is None else f"{a.dtype} {list(a.shape)}"
                raise WeightsError(f"{param_name(paths[p])}: Orbax restored {got}, expected floats "
                                   f"of shape {list(expected[p])}")
    tensors = {name: (hwio_to_oihw if key.endswith("/kernel") else np.asarray)(
        np.asarray(arrays[key], dtype=np.float32)) for name, key in table.items()}
    return Weights({k: np.ascontiguousarray(t) for k, t in tensors.items()}, meta)


def _hwio_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape canonical tensor ``name`` has in the NNX state (kernels HWIO)."""
    return oihw_shape_to_hwio(shape) if name.endswith(".weight") else shape
