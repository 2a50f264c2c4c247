"""Keras 3 model files (``.keras``): a whole model that ``keras.saving.load_model`` opens
and predicts with; written and read without Keras (zipfile, json, h5py).

A ``.keras`` file is a zip archive of three members, stored uncompressed, as Keras 3.15.1's
``model.save("x.keras")`` writes them::

    metadata.json      {"keras_version": "3.15.1", "date_saved": "..."}
    config.json        the serialized model (class, layers, the functional graph)
    model.weights.h5   its weights, the ``.weights.h5`` layout of :mod:`ports.formats.keras`
                       (groups named by each layer's class and rank in ``model.layers``)

The model is one of two forms (:mod:`ports.formats.keras_config`), both with the layer names
of ``ports.keras``:

* variants without a complex bypass (8 of 12): a functional model of **built-in Keras
  layers only** (ceil-mode pools as ``ZeroPadding2D`` + ``MaxPooling2D``, exact after a ReLU);
  ``keras.saving.load_model("x.keras")`` opens it with nothing of this package installed;
* complex bypass (4 of 12): a ``ports.keras.SqueezeNet``, exactly what Keras writes for
  one; it **needs ``import ports.keras`` before ``keras.saving.load_model``** (a custom
  class: its pools after a bypass sum pad with -inf).  :func:`notes` says which, and the
  converter prints it.

The canonical metadata is the root attribute ``squeezenet_ports.metadata`` of
``model.weights.h5``, which Keras ignores.  :func:`read` reads ours and files Keras saved from
a ``ports.keras`` model or from a functional model with its layer names: the architecture
from ``config.json`` (checked against the weights' shapes), the weights through the
``keras`` codec's reader (in the HDF5 helper process); a model whose max pools round down
(a plain ``MaxPooling2D``) is read, and ``source`` says that it is a different network than
Caffe's.  Zip members are read through the one zip guard
(:func:`ports.formats._io.read_zip_member`).
"""

from __future__ import annotations

import datetime
import io
import json
import os
import zipfile
from pathlib import Path

from ..errors import WeightsError
from ..spec import Variant
from . import _hdf5
from . import keras as K3
from . import keras_config as KC
from ._io import ZIP_ERRORS, atomic_write, read_zip_member, zip_error, zip_members
from ._library import dependency
from .canonical import Weights

NAME = "keras-file"
CONFIG, METADATA, WEIGHTS = "config.json", "metadata.json", "model.weights.h5"
MAX_MEMBERS = 1_000          # members of an archive (Keras writes 3 for a SqueezeNet)
MAX_METADATA = 1 << 20       # bytes of metadata.json
MAX_WEIGHTS = 1 << 31        # bytes of model.weights.h5
_EPOCH = (1980, 1, 1, 0, 0, 0)


def notes(weights: Weights) -> list[str]:
    """What a user of the written file must know (the converter prints it)."""
    if KC.needs_ports(weights.variant):
        return [f"{KC.IMPORT_NOTE}: the file holds a ports.keras.SqueezeNet (a complex "
                "bypass pools values that can be negative, which no built-in Keras pool "
                "does in ceil mode)"]
    return ["built-in Keras layers only: keras.saving.load_model opens it without "
            "ports.keras"]


# --- writing ---------------------------------------------------------------------------------
def _member(name: str, when: tuple) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, when)
    info.external_attr = 0o600 << 16   # as Keras' members
    return info


def encode(weights: Weights) -> bytes:
    """The ``.keras`` file of the model :mod:`~ports.formats.keras_config` chooses for
    ``weights``' variant, holding ``weights`` (and their metadata)."""
    dependency("h5py", NAME)
    variant = weights.variant
    layers = [(layer.name, layer.kind) for layer in KC.model_layers(variant)]
    h5 = K3.encode(weights, layers)
    now = datetime.datetime.now()
    metadata = {"keras_version": KC.KERAS_VERSION,
                "date_saved": now.strftime("%Y-%m-%d@%H:%M:%S")}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(_member(METADATA, _EPOCH), json.dumps(metadata))
        zf.writestr(_member(CONFIG, _EPOCH), json.dumps(KC.model_config(variant)))
        zf.writestr(_member(WEIGHTS, now.timetuple()[:6]), h5)
    return buf.getvalue()


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write ``weights`` as a Keras 3 ``.keras`` model file."""
    return [atomic_write(path, encode(weights), overwrite=overwrite)]


# --- reading ---------------------------------------------------------------------------------
def _members(source, size: int) -> dict[str, bytes]:
    """config.json, model.weights.h5 and (if present) metadata.json of the archive."""
    head = source.read(4)
    source.seek(0)
    if head != b"PK\x03\x04":
        hint = (" (an HDF5 file: Keras weights are named .weights.h5 or .h5)"
                if head == b"\x89HDF" else "")
        raise WeightsError(f"not a zip archive (a .keras file is one); first bytes {head!r}{hint}")
    try:
        archive = zipfile.ZipFile(source)
    except ZIP_ERRORS as e:
        raise WeightsError(f"bad zip archive: {zip_error(e)}") from None
    with archive:
        by_name = zip_members(archive.infolist(), limit=MAX_MEMBERS)
        if CONFIG not in by_name:
            listed = ", ".join(sorted(by_name)[:10]) or "none"
            raise WeightsError(f"no {CONFIG}: not a Keras 3 .keras file (members: {listed})"[:400])
        if WEIGHTS not in by_name:
            other = ("model.weights.npz" in by_name and
                     " (weights saved as .npz, weights_format='npz': not read here)")
            raise WeightsError(f"no {WEIGHTS}{other or ''}")
        unknown = sorted(set(by_name) - {CONFIG, METADATA, WEIGHTS})
        if unknown:
            raise WeightsError(f"archive member(s) {', '.join(repr(n[:100]) for n in unknown[:5])} "
                               "that a .keras file of a SqueezeNet does not have (it holds "
                               f"{METADATA}, {CONFIG} and {WEIGHTS}; SqueezeNet has no assets)")
        out = {CONFIG: read_zip_member(archive, by_name[CONFIG], size, f"member {CONFIG}",
                                       limit=KC.MAX_CONFIG),
               WEIGHTS: read_zip_member(archive, by_name[WEIGHTS], size, f"member {WEIGHTS}",
                                        limit=MAX_WEIGHTS)}
        if METADATA in by_name:
            out[METADATA] = read_zip_member(archive, by_name[METADATA], size,
                                            f"member {METADATA}", limit=MAX_METADATA)
    return out


def _keras_version(metadata: bytes | None) -> str | None:
    """The Keras release metadata.json names (Keras itself does not need it: no error)."""
    try:
        value = json.loads(metadata.decode("utf-8")) if metadata else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    version = value.get("keras_version") if isinstance(value, dict) else None
    return version[:40] if isinstance(version, str) else None


def _read_in_process(variant: str, layers: list | None, data: bytes | None = None
                     ) -> tuple[dict, dict]:
    """What the helper runs: the weights member's bytes -> (tensors, meta)."""
    weights = _hdf5.opened(None, data, lambda f: K3.from_h5(
        f, variant=Variant.from_id(variant),
        layers=None if layers is None else [tuple(x) for x in layers],
        what="keras .keras file"), NAME, what=f"{WEIGHTS}: ")
    return weights.tensors, weights.meta


def decode(blob: bytes, *, variant: Variant | None = None) -> Weights:
    return _decode(io.BytesIO(bytes(blob)), len(blob), variant=variant)


def _decode(source, size: int, *, variant: Variant | None) -> Weights:
    from ._sandbox import SandboxError, isolated

    dependency("h5py", NAME)
    members = _members(source, size)
    model = KC.read_config(KC.parse_json(members[CONFIG], CONFIG))
    if variant is not None and model.variant != variant:
        raise WeightsError(f"{CONFIG} describes SqueezeNet {model.variant.id}, not {variant.id}")
    chosen = model.variant
    blob = members[WEIGHTS]
    try:
        tensors, meta = isolated(_read_in_process, chosen.id, model.layers, data=blob,
                                 memory_bytes=K3.SANDBOX_MEMORY + 16 * len(blob),
                                 seconds=K3.SANDBOX_SECONDS + len(blob) / 50e6,
                                 preload=("h5py",))
    except SandboxError as e:  # the reader's own message, or why it died
        raise WeightsError(e.reason) from None
    if not meta.get("source", "").startswith("keras .keras file without metadata"):
        return Weights(tensors, meta)   # ours: the metadata it was written with
    version = _keras_version(members.get(METADATA))
    notes = [f"keras .keras file (Keras {version or 'version not recorded'}, "
             f"{model.form}) without metadata", f"architecture {chosen.id} from {CONFIG}"]
    if model.custom:
        notes.append(f"custom classes {', '.join(model.custom)}: {KC.IMPORT_NOTE}")
    floor = KC.floor_note(chosen, model.pools)
    if floor:
        notes.append(floor)
    return Weights(tensors, {**meta, "source": "; ".join(notes)})


def read(path, *, variant: Variant | None = None) -> Weights:
    try:
        source = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise WeightsError(f"cannot open: {e.strerror or e}") from None
    with source:
        return _decode(source, os.fstat(source.fileno()).st_size, variant=variant)
