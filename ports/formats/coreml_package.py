"""Core ML ML-program packages (``.mlpackage``), a folder: see :mod:`ports.formats.coreml`,
which writes and reads both Core ML kinds.

The folder, as coremltools lays it out (``MLModel.save``)::

    PATH/Manifest.json                               itemInfoEntries, rootModelIdentifier
    PATH/Data/com.apple.CoreML/model.mlmodel         Model: description + mlProgram
    PATH/Data/com.apple.CoreML/weights/weight.bin    MIL blob storage (float32)

Reading goes through :class:`ports.formats._folder.Folder`: the folder is walked once, a
symbolic link, FIFO or device anywhere in it is refused, each file is read bounded and
checked to be the file the walk saw; ``Manifest.json``'s paths and the program's
``@model_path/...`` weight file must be plain paths inside the package; each blob's record
and bytes must lie inside ``weight.bin``.

Writing is atomic: the package is made in a temporary directory beside ``PATH``
(``.NAME.PID.RANDOM.part``) and renamed onto it; an existing ``PATH`` is replaced (with
``overwrite``) only when it is a Core ML package (it holds ``Manifest.json``) or an empty
directory.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WeightsError
from ..spec import Variant
from . import coreml
from ._folder import Folder
from ._io import atomic_write_folder
from .canonical import Weights

NAME = "coreml-package"

__all__ = ["NAME", "encode", "read", "write"]


def encode(weights: Weights) -> dict[str, bytes]:
    """The package's files: relative path -> bytes."""
    return coreml.package_files(weights, NAME)


def _is_package(path: Path) -> bool:
    """Whether the existing folder ``path`` may be replaced: it holds ``Manifest.json``."""
    return coreml.MANIFEST in os.listdir(path)


def write(weights: Weights, path, *, overwrite: bool = True) -> list[Path]:
    """Write the package directory ``path`` atomically
    (:func:`ports.formats._io.atomic_write_folder`); returns ``[path]``."""
    return [atomic_write_folder(path, lambda: encode(weights), replaceable=_is_package,
                                noun="a Core ML package", overwrite=overwrite)]


def load(path) -> coreml.Graph:
    """The :class:`ports.formats.coreml.Graph` of the package folder ``path``."""
    directory = Path(path)
    if not directory.is_dir():
        raise WeightsError("not a directory (a Core ML package is one)")
    folder = Folder.check(directory, noun="a Core ML package")
    model, blobs = coreml.load_package(folder, NAME)
    return coreml.graph_of(model, blobs, NAME)


def read(path, *, variant: Variant | None = None) -> Weights:
    """Canonical weights from the ``.mlpackage`` folder ``path``."""
    graph = load(path)
    label = os.path.basename(os.fspath(path).rstrip("/" + os.sep))
    return coreml.decode_graph(graph, variant=variant, source=f"Core ML package {label}")
