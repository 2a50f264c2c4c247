"""Atomic file output: write to a temporary file beside the destination, then rename.

A reader never sees a half-written destination: it sees the previous file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Union

PathLike = Union[str, os.PathLike]


def atomic_write(path: PathLike, content: Union[bytes, Callable[[BinaryIO], None]], *,
                 overwrite: bool = True) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to ``path``.

    With ``overwrite=False`` an existing ``path`` is kept and :class:`FileExistsError`
    raised; the check and the publication are one atomic ``link``, so two writers racing
    to one destination never both win.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: directory {directory} does not exist")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails with FileExistsError if path appeared meanwhile
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path
