"""Where the project's data files (``weights/imagenet_classes.txt``, ``weights/manifest.toml``)
are found: in a checkout (or editable install) the repository's ``weights/`` folder; in an
installed wheel the copy shipped as package data in ``ports/data/``."""

from __future__ import annotations

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
