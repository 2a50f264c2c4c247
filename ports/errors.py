"""The one error type for bad weight files and mismatched weights."""

from __future__ import annotations

import os
from typing import Union


class WeightsError(ValueError):
    """A weights file (or in-memory weights) that cannot be used.

    ``path``: the file, or ``None`` for in-memory weights; ``format``: the codec name;
    ``reason``: what was wrong, naming the tensor or field and what was expected.
    """

    def __init__(self, reason: str, *, path: Union[str, os.PathLike, None] = None,
                 format: str | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self.format = format
        self.reason = reason
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if format:
                where += f" ({format})"
            where += ": "
        elif format:
            where = f"{format}: "
        super().__init__(where + reason)

    def __reduce__(self):
        # Keeps path, format and reason across pickling (multiprocessing, worker pools).
        return (_rebuild, (self.reason, self.path, self.format))


def _rebuild(reason: str, path, format) -> WeightsError:
    return WeightsError(reason, path=path, format=format)


# The name used by the format readers' documentation.
WeightsFormatError = WeightsError
