"""Hostile files that point outside themselves, each with its honest twin.

Made as an attacker would, for the readers of HDF5 (``keras``, ``keras-h5``, the HDF5
inside ``keras-file``), zip archives (``keras-file``, ``chainer``, ``torch``) and Keras
model configs; the checkpoint folders' are in :mod:`ports.fuzz.hostile_folders`.
Each :class:`Hostile` is built so that **following the pointer is the only way the read
could succeed**: what the pointer leads to is exactly what the hostile file lacks (a layer
group moved to another file, a kernel's bytes kept in a raw file), and the honest twin is
the same file with the part kept inside, which reads.  The tests
(``tests/test_readers_contained.py``), the bad-inputs table and the fuzzer's seeds use them.
"""

from __future__ import annotations

import io
import json
import shutil
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ports import formats
from ports.seeded import seeded_weights
from ports.spec import Variant

VARIANT = Variant("1_1", 10)


@dataclass
class Hostile:
    """One hostile input: ``path`` (refused with a message matching ``match``), ``honest``
    (the same without the hostile part: read), ``outside`` (what the hostile part points to,
    which no reader may open; None where it points nowhere)."""

    label: str
    format: str
    path: Path
    honest: Path
    outside: Path | None
    match: str
    seed: bool = True      # a seed of the fuzzer too (not one that takes seconds a read)


def _written(fmt: str, path: Path, variant: Variant = VARIANT) -> Path:
    formats.write(seeded_weights(variant), path, fmt)
    return path


def _h5py():
    import h5py

    return h5py


# --- HDF5 --------------------------------------------------------------------------------------
def _conv10_group(fmt: str) -> str:
    """The group holding conv10's variables in a file codec ``fmt`` writes."""
    if fmt == "keras-h5":
        return "conv10"
    from ports.formats.keras import key_table

    return key_table(VARIANT)["conv10.weight"].rsplit("/", 2)[0]   # layers/conv2d_25


def _conv10_kernel(fmt: str) -> str:
    group = _conv10_group(fmt)
    return f"{group}/conv10/kernel:0" if fmt == "keras-h5" else f"{group}/vars/0"


def _edit_h5(src: Path, dest: Path, edit: Callable) -> Path:
    shutil.copyfile(src, dest)
    with _h5py().File(dest, "r+") as f:
        edit(f)
    return dest


def _start(fmt: str, d: Path, outside: str | None = None) -> tuple[str, Path, Path | None]:
    """(file ending, the honest file written in ``d``, the path ``outside`` under
    ``d/outside/``) for HDF5 codec ``fmt``."""
    ext = ".h5" if fmt == "keras-h5" else ".weights.h5"
    honest = _written(fmt, d / f"honest{ext}")
    if outside is None:
        return ext, honest, None
    (d / "outside").mkdir(exist_ok=True)
    return ext, honest, d / "outside" / outside


def external_link(fmt: str, d: Path) -> Hostile:
    """conv10's layer group an HDF5 external link to the same group in a file outside."""
    h5py = _h5py()
    ext, honest, outside = _start(fmt, d, "elsewhere.h5")
    group = _conv10_group(fmt)
    with h5py.File(honest, "r") as src, h5py.File(outside, "w") as out:
        src.copy(src[group], out, "conv10")

    def edit(f):
        del f[group]
        f[group] = h5py.ExternalLink(str(outside), "/conv10")
    return Hostile(f"a {ext} whose conv10 group is an HDF5 external link to a file outside",
                   fmt, _edit_h5(honest, d / f"external-link{ext}", edit), honest, outside,
                   "is an external link")


def soft_links(fmt: str, d: Path) -> Hostile:
    """conv10's kernel a soft link to a copy of it elsewhere in the file, plus a dangling
    soft link and a soft-link cycle (which must not hang)."""
    h5py = _h5py()
    ext, honest, _ = _start(fmt, d)

    def edit(f):
        kernel = _conv10_kernel(fmt)
        f.copy(f[kernel], f, "stash")
        del f[kernel]
        f[kernel] = h5py.SoftLink("/stash")
        f["dangling"] = h5py.SoftLink("/no/such/object")
        f["cycle"] = h5py.SoftLink("/cycle")
    return Hostile(f"a {ext} whose conv10 kernel is a soft link (with a dangling one and a "
                   "cycle)", fmt, _edit_h5(honest, d / f"soft-link{ext}", edit), honest, None,
                   "is a soft link")


def _replace_dataset(f, path: str, make: Callable) -> None:
    data = f[path][()]
    del f[path]
    make(f, path, data)


def _kernel_kept_in(outside: Path, fmt: str) -> Callable:
    """An edit of an open file: conv10's kernel kept in the raw file ``outside`` (HDF5
    external storage), which gets exactly the kernel's bytes."""
    def make(f, path, data):
        outside.parent.mkdir(exist_ok=True)
        outside.write_bytes(np.ascontiguousarray(data, "<f4").tobytes())
        f.create_dataset(path, shape=data.shape, dtype="<f4",
                         external=[(str(outside), 0, data.nbytes)])
    return lambda f: _replace_dataset(f, _conv10_kernel(fmt), make)


def external_storage(fmt: str, d: Path) -> Hostile:
    """conv10's kernel a dataset whose bytes are kept in a raw file outside (HDF5 external
    storage), those bytes being exactly the kernel's."""
    ext, honest, outside = _start(fmt, d, "kernel.raw")
    return Hostile(f"a {ext} whose conv10 kernel keeps its data in a raw file outside (HDF5 "
                   "external storage)", fmt, _edit_h5(honest, d / f"external-storage{ext}",
                                                      _kernel_kept_in(outside, fmt)),
                   honest, outside, "keeps its data in external files")


def virtual_dataset(fmt: str, d: Path) -> Hostile:
    """conv10's kernel a virtual dataset mapping a dataset of a file outside."""
    h5py = _h5py()
    ext, honest, outside = _start(fmt, d, "virtual-source.h5")

    def make(f, path, data):
        with h5py.File(outside, "w") as out:
            out["kernel"] = data
        layout = h5py.VirtualLayout(shape=data.shape, dtype=data.dtype)
        layout[...] = h5py.VirtualSource(str(outside), "kernel", shape=data.shape)
        f.create_virtual_dataset(path, layout)
    return Hostile(f"a {ext} whose conv10 kernel is a virtual dataset of a file outside", fmt,
                   _edit_h5(honest, d / f"virtual{ext}",
                            lambda f: _replace_dataset(f, _conv10_kernel(fmt), make)),
                   honest, outside, "is a virtual dataset")


def plugin_filter(fmt: str, d: Path) -> Hostile:
    """conv10's kernel stored through HDF5 filter 32001 (Blosc: a plugin libhdf5 would look
    for in ``HDF5_PLUGIN_PATH``), recorded as optional so the writer could skip it; the
    honest twin uses gzip, which Keras writes."""
    h5py = _h5py()
    ext, honest_plain, _ = _start(fmt, d)

    def make(filter_id):
        def put(f, path, data):
            plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            plist.set_chunk(data.shape)
            if filter_id == 1:
                plist.set_deflate(4)
            else:
                plist.set_filter(filter_id, h5py.h5z.FLAG_OPTIONAL, ())
            space = h5py.h5s.create_simple(data.shape)
            ds = h5py.h5d.create(f.id, path.encode(), h5py.h5t.IEEE_F32LE, space, dcpl=plist)
            ds.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data, "<f4"))
        return lambda f: _replace_dataset(f, _conv10_kernel(fmt), put)
    honest = _edit_h5(honest_plain, d / f"gzip{ext}", make(1))
    return Hostile(f"a {ext} whose conv10 kernel needs HDF5 filter 32001 (a plugin)", fmt,
                   _edit_h5(honest_plain, d / f"plugin-filter{ext}", make(32001)), honest,
                   None, "uses HDF5 filter 32001")


def gzip_bomb_keras(d: Path, inflated: int = 1 << 30) -> Hostile:
    """A ``.keras`` whose weights hold conv10's kernel as one gzip chunk that inflates to
    ``inflated`` bytes (1 GiB of zeros in about 1 MB), past the reader's memory cap; the
    honest twin's chunk inflates to the kernel's own size.  The reader stops at its memory
    cap (libhdf5's filter fails) or, on a loaded machine, at its deadline: either way a
    clean refusal."""
    honest = _written("keras-file", d / "honest.keras")

    def with_chunk(dest: Path, raw: Callable[[np.ndarray], bytes]) -> Path:
        def put(f, path, data):
            ds = f.create_dataset(path, shape=data.shape, dtype="<f4", chunks=data.shape,
                                  compression="gzip")
            ds.id.write_direct_chunk((0,) * data.ndim, raw(data))
        return _edit_keras_weights(honest, dest, lambda f: _replace_dataset(
            f, _conv10_kernel("keras"), put))
    bomb = zlib.compressobj(9)
    blob = b"".join(bomb.compress(bytes(1 << 24)) for _ in range(inflated >> 24)) + bomb.flush()
    return Hostile("a .keras whose conv10 kernel is a gzip chunk inflating to 1 GiB (past the "
                   "memory cap)", "keras-file", with_chunk(d / "gzip-bomb.keras", lambda _: blob),
                   with_chunk(d / "gzip-honest.keras", lambda data: zlib.compress(
                       np.ascontiguousarray(data, "<f4").tobytes())), None,
                   r"dataset /layers/conv2d_25/vars/0 cannot be read|did not finish within",
                   seed=False)


# --- zip archives ------------------------------------------------------------------------------
def rezip(src: Path, dest: Path, *, edit: dict[str, Callable[[bytes], bytes]] | None = None,
          add: list[tuple[str, bytes]] = ()) -> Path:
    """``src`` (a zip) copied to ``dest`` member by member, in order, each edited by
    ``edit[name]`` if given, then ``add``'s members (names kept exactly, duplicates too)."""
    edit = edit or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout, \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Duplicate name": made on purpose
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, edit[info.filename](data) if info.filename in edit else data)
        for name, data in add:
            info = zipfile.ZipInfo("placeholder")
            info.filename = name      # as given: ZipInfo() would normalize it
            zout.writestr(info, data)
    return dest


def _edit_keras_weights(src: Path, dest: Path, edit: Callable) -> Path:
    """``src`` (a ``.keras``) copied to ``dest`` with ``edit(h5py.File)`` applied to its
    ``model.weights.h5``."""
    def edited(h5: bytes) -> bytes:
        buf = io.BytesIO(h5)
        with _h5py().File(buf, "r+") as f:
            edit(f)
        return buf.getvalue()
    return rezip(src, dest, edit={"model.weights.h5": edited})


def keras_external_storage(d: Path) -> Hostile:
    """A ``.keras`` whose weights' conv10 kernel keeps its data in a raw file outside."""
    honest = _written("keras-file", d / "honest.keras")
    outside = d / "outside" / "kernel.raw"
    hostile = _edit_keras_weights(honest, d / "external-storage.keras",
                                  _kernel_kept_in(outside, "keras"))
    return Hostile("a .keras whose conv10 kernel keeps its data in a raw file outside (HDF5 "
                   "external storage)", "keras-file", hostile, honest, outside,
                   "keeps its data in external files")


def zip_escape(fmt: str, d: Path) -> Hostile:
    """An archive with extra members named ``../../x`` and an absolute path (and, for
    ``.keras``, nothing else wrong): refused naming the member."""
    ext = formats.FORMATS[fmt].extensions[0]
    honest = _written(fmt, d / f"honest{ext}")
    member = {"chainer": "../../escape.npy", "torch": "archive/../../escape"}.get(
        fmt, "../../escape")
    hostile = rezip(honest, d / f"zip-escape{ext}", add=[(member, b"x"),
                                                         ("/tmp/absolute", b"x")])
    return Hostile(f"a {ext} with extra members '{member}' and '/tmp/absolute'", fmt, hostile,
                   honest, None, "component|absolute")


def zip_duplicate(fmt: str, d: Path) -> Hostile:
    """An archive holding one member twice (which of the two a tool reads differs)."""
    ext = formats.FORMATS[fmt].extensions[0]
    honest = _written(fmt, d / f"honest{ext}")
    with zipfile.ZipFile(honest) as z:
        first = z.infolist()[-1]
        again = (first.filename, z.read(first))
    return Hostile(f"a {ext} holding member {first.filename!r} twice", fmt,
                   rezip(honest, d / f"zip-duplicate{ext}", add=[again]), honest, None,
                   "appears twice")


def keras_unknown_member(d: Path) -> Hostile:
    """A ``.keras`` with a member the format does not define for a SqueezeNet."""
    honest = _written("keras-file", d / "honest.keras")
    return Hostile("a .keras with an extra member 'assets/run.py'", "keras-file",
                   rezip(honest, d / "unknown-member.keras",
                         add=[("assets/run.py", b"import os\n")]), honest, None,
                   "does not have")


# --- model configs -----------------------------------------------------------------------------
# Keras 2's Lambda: marshalled bytecode, base64 (this is `lambda x: x`'s shape; never run).
_KERAS2_LAMBDA = {"class_name": "Lambda", "name": "lam", "inbound_nodes": [[["conv10", 0, 0, {}]]],
                  "config": {"name": "lam", "trainable": True, "dtype": "float32",
                             "function": ["4wEAAAAAAAAAAAAAAAEAAAABAAAAQwAAAHMEAAAAfABTACkBTqkA",
                                          None, None],
                             "function_type": "lambda", "module": "__main__",
                             "output_shape": None, "arguments": {}}}
_KERAS3_LAMBDA = {"module": "keras.layers", "class_name": "Lambda", "name": "lam",
                  "registered_name": None, "inbound_nodes": [],
                  "config": {"name": "lam", "function": {
                      "class_name": "__lambda__", "config": {
                          "code": "4wEAAAAAAAAAAAAAAAEAAAABAAAAQwAAAHMEAAAAfABTACkBTqkA",
                          "defaults": None, "closure": None}}}}


def _with_layer(config: dict, layer: dict) -> dict:
    config = json.loads(json.dumps(config))
    config["config"]["layers"].append(layer)
    return config


def lambda_config(fmt: str, d: Path) -> Hostile:
    """A whole-model file whose config holds a ``Lambda`` layer (marshalled bytecode): a
    tf.keras ``.h5`` (``fmt`` ``keras-h5``) or a ``.keras``."""
    from ports.formats import keras_config as KC
    from ports.formats import keras_legacy

    weights = seeded_weights(VARIANT)
    config = KC.builtin_config(VARIANT)
    if fmt == "keras-h5":
        honest, path = d / "honest-model.h5", d / "lambda.h5"
        honest.write_bytes(keras_legacy.encode(weights, model_config=config))
        path.write_bytes(keras_legacy.encode(weights, model_config=_with_layer(
            config, _KERAS2_LAMBDA)))
    else:
        honest = _written("keras-file", d / "honest.keras")
        path = rezip(honest, d / "lambda.keras", edit={"config.json": lambda raw: json.dumps(
            _with_layer(json.loads(raw), _KERAS3_LAMBDA)).encode()})
    return Hostile(f"a whole-model {path.suffix} whose config holds a Lambda layer (bytecode)",
                   fmt, path, honest, None, "layer lam is a Lambda: a SqueezeNet is made of")


def builders() -> dict[str, list[Callable[[Path], Hostile]]]:
    """Format -> the functions building its hostile inputs (each takes an empty folder)."""
    def bound(f, *args):
        return lambda d: f(*args, d)
    hdf5 = (external_link, soft_links, external_storage, virtual_dataset, plugin_filter)
    return {
        "keras": [bound(f, "keras") for f in hdf5],
        "keras-h5": [bound(f, "keras-h5") for f in hdf5] + [bound(lambda_config, "keras-h5")],
        "keras-file": [keras_external_storage, gzip_bomb_keras, bound(zip_escape, "keras-file"),
                       bound(zip_duplicate, "keras-file"), keras_unknown_member,
                       bound(lambda_config, "keras-file")],
        "chainer": [bound(zip_escape, "chainer"), bound(zip_duplicate, "chainer")],
        "torch": [bound(zip_escape, "torch"), bound(zip_duplicate, "torch")],
    }


def build_all(fmt: str, directory: Path) -> list[Hostile]:
    """Every hostile input of ``fmt`` (HDF5, zip and config classes), each in its own
    subfolder of ``directory``."""
    out = []
    for k, build in enumerate(builders().get(fmt, [])):
        d = directory / f"hostile{k}"
        d.mkdir(parents=True, exist_ok=True)
        out.append(build(d))
    return out
