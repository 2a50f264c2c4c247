"""What the codecs share beside :mod:`ports.formats.canonical` (never the registry, which imports
them): :func:`dependency`, :func:`companion` and :func:`about`."""

from __future__ import annotations

import contextlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Iterator

from ..errors import WeightsError

# Modules the codecs import -> the distribution that provides them (the ``convert`` extra
# installs every one; safetensors is a dependency of the package itself).
PACKAGES = {"google.protobuf": "protobuf", "h5py": "h5py", "msgpack": "msgpack",
            "onnx": "onnx", "safetensors": "safetensors", "flatbuffers": "flatbuffers"}
INSTALL = "pip install 'squeezenet-ports[convert]'"


def dependency(module: str, format: str) -> ModuleType:
    """``module`` imported for codec ``format``.  Missing (or failing to import), it is a
    :class:`WeightsError` naming the package and the extra that installs it -- the one
    judgement every codec's optional library goes through."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = next((p for m, p in PACKAGES.items()
                        if module == m or module.startswith(m + ".")), module.split(".")[0])
        raise WeightsError(f"the {format} codec needs the {package} package, which cannot be "
                           f"imported ({e}); {INSTALL} installs every codec's library",
                           format=format) from None


def companion(path: os.PathLike | str, ending: str) -> Path:
    """The file written beside ``path`` with ``ending`` in place of its last suffix
    (``w.caffemodel`` -> ``w.prototxt``)."""
    path = Path(path)
    stem = path.name[:-len(path.suffix)] if path.suffix else path.name
    return path.with_name(stem + ending)


@contextlib.contextmanager
def about(path: os.PathLike | str, format: str | None = None) -> Iterator[None]:
    """A :class:`WeightsError` raised inside names ``path`` and ``format`` where it names no
    file or format itself: the boundary of :func:`ports.formats.read` and ``write``, and a
    codec's for a file other than the one being read (a ``.prototxt``, a params file)."""
    try:
        yield
    except WeightsError as e:
        if e.path is not None and (e.format is not None or format is None):
            raise
        raise WeightsError(e.reason, path=e.path or path, format=e.format or format) from None
