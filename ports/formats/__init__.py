"""Weight-file codecs, framework-free: ``read(path) -> Weights``, ``write(weights, path)``.

Each format is one module of this package exposing::

    NAME: str                      # format name used on the command line
    EXTENSIONS: tuple[str, ...]    # file-name endings that select it
    read(path, *, variant=None) -> ports.canonical.Weights
    write(weights, path, *, overwrite=True) -> list[pathlib.Path]   # files written

Modules are imported lazily, so a missing optional dependency of one codec (protobuf,
h5py, msgpack, onnx) never breaks another.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

from ..canonical import Weights, check
from ..errors import WeightsError
from ..spec import Variant

# name -> (module, extensions); longest extension wins on detection.
FORMATS: dict[str, tuple[str, tuple[str, ...]]] = {
    "safetensors": ("safetensors", (".safetensors",)),
    "caffe": ("caffe", (".caffemodel",)),
    "deepcompression": ("deepcompression", (".net",)),
    "torch": ("torch", (".pth", ".pt")),
    "keras": ("keras", (".weights.h5", ".h5")),
    "flax": ("flax", (".msgpack",)),
    "mxnet": ("mxnet", (".params",)),
    "chainer": ("chainer", (".npz",)),
    "onnx": ("onnx", (".onnx",)),
}


def codec(name: str) -> ModuleType:
    """The codec module for format ``name``."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{FORMATS[name][0]}")


def detect(path: os.PathLike | str) -> str:
    """Format name from the file name's ending."""
    lower = os.fspath(path).lower()
    best, best_len = None, 0
    for name, (_, exts) in FORMATS.items():
        for ext in exts:
            if lower.endswith(ext) and len(ext) > best_len:
                best, best_len = name, len(ext)
    if best is None:
        known = ", ".join(e for _, exts in FORMATS.values() for e in exts)
        raise WeightsError(f"cannot tell the format from the file name (known endings: {known});"
                           " name it with --from/--to", path=path)
    return best


def read(path: os.PathLike | str, format: str | None = None, *,
         variant: Variant | None = None) -> Weights:
    """Read any supported file into checked canonical :class:`Weights`."""
    name = format or detect(path)
    p = Path(path)
    if not p.exists():
        raise WeightsError("no such file", path=path, format=name)
    if not p.is_file():
        raise WeightsError("not a regular file", path=path, format=name)
    weights = codec(name).read(path, variant=variant)
    return check(weights, variant, path=path, format=name)


def write(weights: Weights, path: os.PathLike | str, format: str | None = None, *,
          overwrite: bool = True) -> list[Path]:
    """Write checked ``weights`` to ``path``; returns every file written."""
    name = format or detect(path)
    check(weights)
    return codec(name).write(weights, path, overwrite=overwrite)
