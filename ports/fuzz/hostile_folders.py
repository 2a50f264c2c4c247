"""Hostile inputs that reach outside what the reader was given, each with its honest twin.

A reader reads only the file (or folder) it was given.  Each builder here writes a valid
seed -- the honest twin, which reads -- and a copy of it in which one part (a chunk, a leaf
folder, ``_METADATA``, an export's params or symbol file, a Core ML package's weights,
model or ``Data`` folder) is replaced by a symbolic link to a
copy of that same part placed *outside* the checkpoint folder (or beside the pair, in
another directory).  The bytes are the same, so following the link is the only way the
hostile input could read; a contained reader refuses it, naming the link.

Every builder takes a fresh directory (created if missing) and returns a :class:`Hostile`:
``path`` is what to read, ``honest`` the twin.  Seeds are seeded weights of
:data:`SEED_VARIANT`, written with :func:`ports.formats.write`.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ports import formats
from ports.seeded import seeded_weights
from ports.spec import Variant

SEED_VARIANT = Variant("1_1", 10)
CHUNK = "conv1.kernel.value/0.0.0.0"
LEAF = "conv1.kernel.value"
TREE_METADATA = "_METADATA"
PREFIX = "m"
MLPACKAGE_MODEL = "Data/com.apple.CoreML/model.mlmodel"
MLPACKAGE_WEIGHTS = "Data/com.apple.CoreML/weights/weight.bin"

__all__ = ["SEED_VARIANT", "Hostile", "BUILDERS", "build_all", "orbax_chunk_link",
           "orbax_leaf_folder_link", "orbax_metadata_link", "mxnet_params_link",
           "mxnet_symbol_link", "mlpackage_weights_link", "mlpackage_model_link",
           "mlpackage_data_folder_link"]


@dataclass(frozen=True)
class Hostile:
    """One hostile input and its honest twin.

    ``path``: what to read (refused); ``honest``: the same input without the link (reads);
    ``folder``: everything the reader may open (the checkpoint folder, or the pair's
    directory); ``link``: the symbolic link inside it; ``entry``: the link's name relative to
    ``folder`` (what the refusal names); ``outside``: the copy the link points to."""

    format: str
    label: str
    path: Path
    honest: Path
    folder: Path
    link: Path
    entry: str
    outside: Path


def _seed(dest: Path, name: str) -> None:
    formats.write(seeded_weights(SEED_VARIANT), dest, name)


def _folder(name: str, ending: str, directory: os.PathLike | str, part: str,
            label: str) -> Hostile:
    """A folder of format ``name`` whose ``part`` (relative path) is a link to a copy of
    itself outside."""
    directory = Path(os.path.abspath(directory))
    directory.mkdir(parents=True, exist_ok=True)
    honest, hostile = directory / f"honest{ending}", directory / f"hostile{ending}"
    _seed(honest, name)
    shutil.copytree(honest, hostile, symlinks=True)
    outside = directory / "outside" / Path(part).name
    outside.parent.mkdir()
    shutil.move(str(hostile / part), str(outside))
    os.symlink(outside, hostile / part)
    return Hostile(name, label, hostile, honest, hostile, hostile / part, part, outside)


def _orbax(directory: os.PathLike | str, part: str, label: str) -> Hostile:
    """A checkpoint whose ``part`` (relative path) is a link to a copy of itself outside."""
    return _folder("orbax", ".orbax", directory, part, label)


def _mlpackage(directory: os.PathLike | str, part: str, label: str) -> Hostile:
    """A Core ML package whose ``part`` is a link to a copy of itself outside."""
    return _folder("coreml-package", ".mlpackage", directory, part, label)


def mlpackage_weights_link(directory: os.PathLike | str) -> Hostile:
    """A Core ML package whose ``weight.bin`` is a link to the same file outside."""
    return _mlpackage(directory, MLPACKAGE_WEIGHTS, "weight.bin a link to the same file "
                      "outside the package")


def mlpackage_model_link(directory: os.PathLike | str) -> Hostile:
    """A Core ML package whose ``model.mlmodel`` is a link to the same file outside."""
    return _mlpackage(directory, MLPACKAGE_MODEL, "model.mlmodel a link to the same file "
                      "outside the package")


def mlpackage_data_folder_link(directory: os.PathLike | str) -> Hostile:
    """A Core ML package whose ``Data/`` folder is a link to a copy of it outside."""
    return _mlpackage(directory, "Data", "the Data folder a link to the same folder outside "
                      "the package")


def orbax_chunk_link(directory: os.PathLike | str) -> Hostile:
    """An Orbax checkpoint whose conv1 kernel chunk is a link to the same chunk outside."""
    return _orbax(directory, CHUNK, "a chunk that is a link to the same chunk outside the "
                  "checkpoint")


def orbax_leaf_folder_link(directory: os.PathLike | str) -> Hostile:
    """An Orbax checkpoint whose ``conv1.kernel.value/`` folder is a link to a copy of it
    outside."""
    return _orbax(directory, LEAF, "a leaf folder that is a link to the same folder outside "
                  "the checkpoint")


def orbax_metadata_link(directory: os.PathLike | str) -> Hostile:
    """An Orbax checkpoint whose ``_METADATA`` is a link to the same file outside."""
    return _orbax(directory, TREE_METADATA, "_METADATA a link to the same file outside the "
                  "checkpoint")


def _mxnet(directory: os.PathLike | str, ending: str, label: str) -> Hostile:
    """An export pair whose ``PREFIX + ending`` file is a link to a copy in another
    directory."""
    directory = Path(os.path.abspath(directory))
    honest_dir, hostile_dir = directory / "honest", directory / "hostile"
    for d in (honest_dir, hostile_dir, directory / "outside"):
        d.mkdir(parents=True)
    _seed(honest_dir / PREFIX, "mxnet-export")
    symbol, params = formats.outputs(honest_dir / PREFIX, "mxnet-export")
    for f in (symbol, params):
        shutil.copyfile(f, hostile_dir / f.name)
    name = PREFIX + ending
    outside = directory / "outside" / name
    shutil.move(str(hostile_dir / name), str(outside))
    os.symlink(outside, hostile_dir / name)
    return Hostile("mxnet-export", label, hostile_dir / symbol.name, symbol, hostile_dir,
                   hostile_dir / name, name, outside)


def mxnet_params_link(directory: os.PathLike | str) -> Hostile:
    """An MXNet export pair whose ``-0000.params`` is a link to the same file elsewhere."""
    return _mxnet(directory, "-0000.params", "the params file a link to the same file "
                  "elsewhere")


def mxnet_symbol_link(directory: os.PathLike | str) -> Hostile:
    """An MXNet export pair whose ``-symbol.json`` is a link to the same file elsewhere."""
    return _mxnet(directory, "-symbol.json", "the symbol file a link to the same file "
                  "elsewhere")


# format -> its builders, in the order a table lists them
BUILDERS: dict[str, tuple[Callable[[os.PathLike | str], Hostile], ...]] = {
    "orbax": (orbax_chunk_link, orbax_leaf_folder_link, orbax_metadata_link),
    "mxnet-export": (mxnet_params_link, mxnet_symbol_link),
    "coreml-package": (mlpackage_weights_link, mlpackage_model_link,
                       mlpackage_data_folder_link),
}


def build_all(directory: os.PathLike | str, name: str | None = None) -> list[Hostile]:
    """Every builder's input (of format ``name``, or of all), each in its own subfolder of
    ``directory``."""
    directory = Path(directory)
    return [build(directory / f"{fmt}-{i}")
            for fmt, builders in BUILDERS.items() if name in (None, fmt)
            for i, build in enumerate(builders)]
