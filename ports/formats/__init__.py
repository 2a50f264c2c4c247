"""Weight-file codecs, framework-free: ``read(path) -> Weights``, ``write(weights, path)``.

:data:`FORMATS` is the registry and the single source of what a format is called, the file
endings that select it, the files a write creates and the options a read accepts; the
command-line tools are built from it.  Each format is one module of this package exposing::

    NAME: str                      # the format's name, as registered
    read(path, *, variant=None, **options) -> ports.formats.canonical.Weights
    write(weights, path, *, overwrite=True) -> list[pathlib.Path]   # files written

and only its key table and its format's own hooks: the judgements every codec makes (which
variant do the shapes prove, which keys are missing, unexpected or mis-shaped, is the
metadata strings to strings) are :mod:`ports.formats.canonical`'s.

A codec raises :class:`WeightsError` saying what it found; :func:`read` and :func:`write`
are the one boundary that names the file and format (a problem in another file -- a
``.prototxt``, an export's params file -- names that file itself, and keeps it).  Codecs
never import this registry: what they share is :mod:`ports.formats._library`.

Modules are imported lazily, so a missing optional dependency of one codec (protobuf,
h5py, msgpack, onnx, safetensors) never breaks another; each codec imports its library
through :func:`dependency`, so a missing one is a :class:`WeightsError` naming the package
and the extra that installs it.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from ..errors import WeightsError
from ..spec import Variant
from ._library import INSTALL, PACKAGES, about, companion, dependency  # noqa: F401 - re-exported

if TYPE_CHECKING:  # the registry itself imports the standard library only (ports.formats.manifest)
    from .canonical import Weights


class ReadOption(NamedTuple):
    """An option a format's ``read`` accepts beyond ``variant`` (``tools/convert --NAME``)."""

    name: str
    help: str
    metavar: str = "VALUE"
    type: Callable[[str], Any] = str
    choices: tuple = ()


class Format(NamedTuple):
    """One registered format.  ``FORMATS[name][0]`` is the module, ``[1]`` the endings."""

    module: str
    extensions: tuple[str, ...]           # file-name endings that select it (lower case)
    companions: tuple[str, ...] = ()      # endings of the files a write puts beside it
    read_options: tuple[ReadOption, ...] = ()
    directory: bool = False   # a write creates a directory, a read takes one (a checkpoint)
    prefix: bool = False      # named by a prefix: a path without the format's endings gets them
    codebook: bool = False    # stores weights through a per-layer codebook: writes exactly
                              # only weights with at most 255 distinct values per layer

    def outputs(self, path: os.PathLike | str) -> list[Path]:
        """Every file (or directory) a write to ``path`` creates: ``path``, then its
        companions.  A prefix format's are ``PREFIX + ending`` for its first ending and each
        companion, ``PREFIX`` being ``path`` less any of those endings (``m``,
        ``m-symbol.json`` and ``m-0000.params`` all give ``m-symbol.json``, ``m-0000.params``)."""
        if not self.prefix:
            return [Path(path)] + [companion(path, ending) for ending in self.companions]
        text = os.fspath(path)
        endings = sorted(self.extensions + self.companions, key=len, reverse=True)
        stem = next((text[:-len(e)] for e in endings if text.lower().endswith(e)), text)
        return [Path(stem + ending) for ending in (self.extensions[0], *self.companions)]


# name -> Format; on detection the longest matching ending wins.
FORMATS: dict[str, Format] = {
    "safetensors": Format("safetensors", (".safetensors",)),
    "caffe": Format("caffe", (".caffemodel",), companions=(".prototxt",), read_options=(
        ReadOption("prototxt", "Caffe net definition supplying what a .caffemodel does not "
                   "state (conv10's padding of a weights-only file)", metavar="FILE"),)),
    "deepcompression": Format("deepcompression", (".net",), codebook=True, read_options=(
        ReadOption("bits", "codebook bits of a Deep Compression .net (default 8)",
                   metavar="N", type=int, choices=(4, 8)),)),
    "dcz": Format("dcz", (".dcz",), codebook=True),
    "torch": Format("torch", (".pth", ".pt")),
    "keras": Format("keras", (".weights.h5",)),
    "keras-h5": Format("keras_legacy", (".h5", ".hdf5")),
    "keras-file": Format("keras_file", (".keras",)),
    "flax": Format("flax", (".msgpack",)),
    "mxnet": Format("mxnet", (".params",), read_options=(
        ReadOption("preprocessing", "input mode of a .params file, which does not record it: "
                   "caffe, torchvision (the default, the Gluon zoo's) or none",
                   metavar="MODE"),)),
    "chainer": Format("chainer", (".npz",)),
    "onnx": Format("onnx", (".onnx",)),
    "tflite": Format("tflite", (".tflite",)),
    "orbax": Format("orbax", (".orbax",), directory=True),
    "coreml": Format("coreml", (".mlmodel",)),
    "coreml-package": Format("coreml_package", (".mlpackage",), directory=True),
    "mxnet-export": Format("mxnet_export", ("-symbol.json",), companions=("-0000.params",),
                           prefix=True, read_options=(
        ReadOption("epoch", "epoch N of an MXNet export pair: reads PREFIX-000N.params "
                   "(default 0)", metavar="N", type=int),)),
}


# What each directory format's folder is called, for the error a plain file gets.
FOLDERS = {"orbax": "an Orbax checkpoint", "coreml-package": "a Core ML .mlpackage"}


def codec(name: str) -> ModuleType:
    """The codec module for format ``name``."""
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return importlib.import_module(f"{__name__}.{FORMATS[name].module}")


def detect(path: os.PathLike | str) -> str:
    """Format name from the file name's ending; an existing directory without a known ending
    is an Orbax checkpoint (the first directory format registered: Orbax names none; a
    ``.mlpackage`` is always named by its ending)."""
    lower = os.fspath(path).rstrip("/" + os.sep).lower()
    best, best_len = None, 0
    for name, fmt in FORMATS.items():
        for ext in fmt.extensions:
            if lower.endswith(ext) and len(ext) > best_len:
                best, best_len = name, len(ext)
    directories = [name for name, fmt in FORMATS.items() if fmt.directory]
    if best is None and directories and os.path.isdir(path):
        best = directories[0]  # the first registered (Orbax); the others are named by ending
    if best is None:
        known = ", ".join(e for fmt in FORMATS.values() for e in fmt.extensions)
        raise WeightsError(f"cannot tell the format from the file name (known endings: {known});"
                           " name it with --from/--to", path=path)
    return best


def read_options() -> dict[str, tuple[ReadOption, list[str]]]:
    """Every read option of every format: name -> (the option, the formats taking it)."""
    out: dict[str, tuple[ReadOption, list[str]]] = {}
    for name, fmt in FORMATS.items():
        for option in fmt.read_options:
            out.setdefault(option.name, (option, []))[1].append(name)
    return out


def outputs(path: os.PathLike | str, format: str | None = None) -> list[Path]:
    """Every file :func:`write` creates for ``path`` (in ``format``, else detected)."""
    return FORMATS[format or detect(path)].outputs(path)


def read(path: os.PathLike | str, format: str | None = None, *,
         variant: Variant | None = None, **options) -> Weights:
    """Read any supported file into checked canonical :class:`Weights`.  ``options``: the
    format's registered read options (e.g. ``prototxt=`` for caffe)."""
    name = format or detect(path)
    fmt = FORMATS.get(name)
    if fmt is None:
        codec(name)  # raises: unknown format
    accepted = {o.name for o in fmt.read_options}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"format {name} takes no read option {', '.join(unknown)}"
                         + (f" (it takes {', '.join(sorted(accepted))})" if accepted else ""))
    from .canonical import check

    p = fmt.outputs(path)[0] if fmt.prefix else Path(path)
    if not p.exists():
        raise WeightsError("no such " + ("directory" if fmt.directory else "file"), path=p,
                           format=name)
    if fmt.directory and not p.is_dir():
        raise WeightsError(f"not a directory ({FOLDERS.get(name, name)} is one)", path=path,
                           format=name)
    if not fmt.directory and not p.is_file():
        raise WeightsError("not a regular file", path=p, format=name)
    with about(p if fmt.prefix else path, name):  # the one place a codec's error gets both
        weights = codec(name).read(path, variant=variant, **options)
    return check(weights, variant, path=path, format=name)


def write(weights: Weights, path: os.PathLike | str, format: str | None = None, *,
          overwrite: bool = True) -> list[Path]:
    """Write checked ``weights`` to ``path``; returns every file written."""
    from .canonical import check

    name = format or detect(path)
    check(weights)
    with about(path, name):
        return codec(name).write(weights, path, overwrite=overwrite)
