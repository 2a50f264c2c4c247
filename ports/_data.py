"""Where the project's data files (``weights/imagenet_classes.txt``, ``weights/manifest.toml``)
are found: in a checkout (or editable install) the repository's ``weights/`` folder; in an
installed wheel the copy shipped as package data in ``ports/data/``.  :func:`shared_dir` is
the folder of real ground-truth data beside the checkout (Caffe files, Deep Compression)."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
CANDIDATES = (_PACKAGE.parent / "weights", _PACKAGE / "data")


def data_file(name: str) -> Path:
    """Path of data file ``name``; :class:`FileNotFoundError` naming every place looked in."""
    for folder in CANDIDATES:
        path = folder / name
        if path.is_file():
            return path
    looked = ", ".join(str(folder / name) for folder in CANDIDATES)
    raise FileNotFoundError(f"{name}: data file not found (looked in {looked})")


def shared_dir() -> Path:
    """``$SQUEEZENET_SHARED``, or ``../shared`` beside the checkout."""
    env = os.environ.get("SQUEEZENET_SHARED")
    return Path(env) if env else _PACKAGE.parent.parent / "shared"
