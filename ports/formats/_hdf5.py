"""HDF5 read only from itself: the one way every HDF5 codec (``keras``, ``keras-h5`` and the
``model.weights.h5`` inside a ``.keras``) opens and reads a file, with h5py.

An HDF5 file can point outside itself, and libhdf5 follows such pointers on its own when an
object or its data is touched: an **external link** names an object of another file, a
**soft link** a path (possibly dangling, possibly a cycle), a dataset with **external raw
storage** keeps its bytes in other files, a **virtual dataset** maps other files' datasets,
and a **filter** id libhdf5 does not know makes it search ``HDF5_PLUGIN_PATH`` for a plugin
to load.  :func:`opened` therefore walks every link of the file first (``H5Lvisit``: no
link is followed, hard-link cycles are visited once) and refuses, naming the object and
what it points to:

* any link but a hard link (soft, external, user-defined): Keras writes only hard links;
* a dataset with external storage or a virtual layout;
* a dataset filter other than those Keras and h5py write: deflate (gzip, 1), shuffle (2),
  fletcher32 (3) and lzf (32000);
* more than :data:`MAX_LINKS` links.

Only then does the caller's ``parse`` run; every path it follows is a hard link inside the
file.  libhdf5's reports of a damaged file (also a filter that fails, e.g. a gzip chunk
inflating past the reader's memory cap) become :class:`~ports.errors.WeightsError`;
:func:`array` reads one dataset and names it in the error.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from ..errors import WeightsError
from ._library import dependency

T = TypeVar("T")

MAX_LINKS = 100_000     # links in a file before we give up (SqueezeNet's: about 200)
FILTERS = {1: "deflate (gzip)", 2: "shuffle", 3: "fletcher32", 32000: "lzf"}
REFUSED = "a weights file is read only from itself"


def _problems(f, h5py) -> list[str]:
    """What in the open file points outside it (see the module docstring)."""
    h5l, h5d = h5py.h5l, h5py.h5d
    links: list[tuple[bytes, int]] = []

    def visit(name: bytes, info) -> int | None:
        links.append((name, info.type))
        return 1 if len(links) > MAX_LINKS else None  # non-None stops the walk

    f.id.links.visit(visit, info=True)
    if len(links) > MAX_LINKS:
        return [f"more than {MAX_LINKS} links"]
    problems: list[str] = []
    for raw, kind in links:
        name = "/" + raw.decode("utf-8", "replace")
        if kind == h5l.TYPE_HARD:
            continue
        if kind == h5l.TYPE_SOFT:
            target = f.id.links.get_val(raw).decode("utf-8", "replace")
            problems.append(f"{name[:200]} is a soft link (to {target[:200]})")
        elif kind == h5l.TYPE_EXTERNAL:
            file, path = (v.decode("utf-8", "replace") for v in f.id.links.get_val(raw))
            problems.append(f"{name[:200]} is an external link (to {path[:200]} in file "
                            f"{file[:200]})")
        else:
            problems.append(f"{name[:200]} is a user-defined link (type {kind})")
    if problems:
        return problems
    for raw, _ in links:  # every link is a hard link: opening by name follows no other
        name = "/" + raw.decode("utf-8", "replace")
        obj = h5py.h5o.open(f.id, raw)
        if not isinstance(obj, h5py.h5d.DatasetID):
            continue
        plist = obj.get_create_plist()
        if plist.get_external_count():
            files = [plist.get_external(i)[0].decode("utf-8", "replace")
                     for i in range(min(plist.get_external_count(), 3))]
            problems.append(f"dataset {name[:200]} keeps its data in external files "
                            f"({', '.join(x[:200] for x in files)})")
        if plist.get_layout() == h5d.VIRTUAL:
            problems.append(f"dataset {name[:200]} is a virtual dataset (its data lives in "
                            "other datasets or files)")
        for i in range(plist.get_nfilters()):
            code, _, _, label = plist.get_filter(i)
            if code not in FILTERS:
                problems.append(f"dataset {name[:200]} uses HDF5 filter {code} "
                                f"({label.decode('utf-8', 'replace')[:60] or 'unnamed'}), "
                                f"not one Keras writes ({', '.join(FILTERS.values())})")
    return problems


def opened(source: str | None, data: bytes | None, parse: Callable[[object], T],
           fmt: str, what: str = "") -> T:
    """``parse(h5py.File)`` on the file ``source`` (or the bytes ``data``) once the file is
    proved to point nowhere outside itself; libhdf5's reports of a damaged file become a
    :class:`WeightsError` (``fmt``: the codec, for a missing h5py; ``what``: a prefix naming
    the HDF5 file inside another, e.g. ``"model.weights.h5: "``)."""
    h5py = dependency("h5py", fmt)

    try:
        f = h5py.File(io.BytesIO(data) if data is not None else source, "r")
    except OSError as e:
        raise WeightsError(f"{what}not an HDF5 file ({e})") from None
    with f:
        try:
            problems = _problems(f, h5py)
            if problems:
                raise WeightsError(f"{what}" + "; ".join(problems[:5])
                                   + (f"; and {len(problems) - 5} more" if len(problems) > 5
                                      else "") + f": {REFUSED} (no HDF5 link, external storage"
                                   " or plugin filter is followed)")
            return parse(f)
        except (OSError, KeyError, RuntimeError, TypeError) as e:
            # libhdf5's reports of a damaged file reach Python as OSError, RuntimeError, or
            # a KeyError "Unable to ..."; a datatype h5py cannot map to NumPy (a string
            # encoding that does not exist) as a TypeError raised inside h5py.  Any other
            # KeyError or TypeError is a bug of ours, said as one.
            if isinstance(e, KeyError) and "Unable to" not in str(e):
                raise
            if isinstance(e, TypeError) and not _raised_in_h5py(e):
                raise
            raise WeightsError(f"{what}damaged HDF5 file ({type(e).__name__}: {e})"[:600]) \
                from None


def array(ds, dtype=np.float32) -> np.ndarray:
    """The whole of dataset ``ds`` as ``dtype``; libhdf5's failure to read it (a damaged
    chunk, a filter that fails or runs out of memory) names the dataset."""
    try:
        return np.ascontiguousarray(ds[()], dtype)
    except (OSError, RuntimeError) as e:
        raise WeightsError(f"dataset {ds.name[:200]} cannot be read ({type(e).__name__}: "
                           f"{e})"[:600]) from None


def _raised_in_h5py(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is h5py's own code."""
    tb = e.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in Path(tb.tb_frame.f_code.co_filename).parts
