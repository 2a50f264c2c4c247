"""Recorded conformance results, and the key that says whether they are still current.

A port's results live in ``build/conformance/PORT.json`` (one record per case) and
``PORT.npz`` (its logits, float32-rounded, for port-vs-port comparison).  Whoever computes a
case records it: the port's test module (``tox -e torch``) or ``python -m
conformance.collect`` (the matrix).  The other reuses a record only while its **key** equals
the key of the process about to compute it:

``code``         SHA-256 of every file of the ``ports`` package and of ``conformance/``
                 (the ports, the harness, the goldens, the inputs, the tolerance table),
                 and for a port from outside this project, of its module and every file
                 of its package (:func:`port_digest`);
``shared``       SHA-256 of the shared ground-truth files the fixtures read (or which are
                 missing);
``environment``  SHA-256 of the Python version, the platform, the CPU (model and vector
                 extensions), every installed distribution and its version, and the
                 environment variables that change results (``ENV_VARS``, the thread
                 counts among them).

A record with any other key is stale and is recomputed, never reported.  The file carries
``schema`` (:data:`SCHEMA`); a file of another schema is ignored.  ``SQUEEZENET_RECOMPUTE=1``
recomputes everything.

A file also says whether the run that wrote it **finished** (``finished``; a run writes
``false`` when it starts and every few cases, ``true`` only at its end) and which run wrote
it (``run``: ``$SQUEEZENET_RUN``, set by the matrix), and it holds the SHA-256 of its
logits file; both files are written atomically (:func:`ports.formats._io.atomic_write`), so a
killed writer leaves the previous file or one marked unfinished.  :func:`verdict` says
whether a file may be reported: the code and shared parts of its key are this checkout's,
it is finished (and, given a run, written by it), every expected case is in it and every
value in it is finite.  Gathering results from other machines (``matrix --no-run``) checks
the same; the environment part cannot be compared there and is shown instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import platform
import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from . import releases
from .harness import RESULTS
from .host import cpu_description, versions

SCHEMA = 1
ENV_VARS = ("KERAS_BACKEND", "JAX_ENABLE_X64", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_ENABLE_ONEDNN_OPTS",
            "XLA_FLAGS", "MXNET_ENGINE_TYPE")
RUN_VAR = "SQUEEZENET_RUN"  # the matrix's run id, recorded by the collect processes it starts
_SOURCE_SUFFIXES = {".py", ".toml", ".npz", ".txt", ".json", ".proto"}


def _tree_digest(root: Path, suffixes: set[str] | None = _SOURCE_SUFFIXES) -> str:
    """Digest of the names and contents of the files under ``root`` whose suffix is in
    ``suffixes`` (every file when None), ``__pycache__`` left out."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and (suffixes is None or path.suffix in suffixes) \
                and "__pycache__" not in path.parts:
            h.update(path.relative_to(root).as_posix().encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


@cache
def code_digest() -> str:
    """Digest of the ``ports`` package being imported and of ``conformance/``."""
    import ports

    h = hashlib.sha256()
    for root in (Path(ports.__file__).resolve().parent, Path(__file__).resolve().parent):
        h.update(_tree_digest(root).encode())
    return h.hexdigest()


@cache
def port_digest(port: str) -> str:
    """Digest of the code of a port from outside this project: every file of the package
    its module belongs to (its top-level package, ``__pycache__`` left out), or the module
    file itself when it is a top-level module; ``""`` for a port of this project (its code
    is in :func:`code_digest`)."""
    import importlib.util

    from .registry import PORTS

    top = PORTS[port].module.split(".")[0]
    if top in ("ports", "conformance"):
        return ""
    spec = importlib.util.find_spec(top)
    if spec is None:
        raise ImportError(f"port {port}: cannot find module {top}")
    if spec.submodule_search_locations:
        h = hashlib.sha256()
        for location in spec.submodule_search_locations:
            h.update(_tree_digest(Path(location), None).encode())
        return h.hexdigest()
    return hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()


def port_code_digest(port: str | None) -> str:
    """The ``code`` part of the key of ``port``'s records: :func:`code_digest`, combined
    with :func:`port_digest` for a port from outside this project."""
    own = port_digest(port) if port else ""
    if not own:
        return code_digest()
    return hashlib.sha256(f"{code_digest()}:{own}".encode()).hexdigest()


@cache
def shared_digest() -> str:
    from .fixtures import shared_files

    h = hashlib.sha256()
    for relative, path in shared_files():
        h.update(relative.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"missing")
    return h.hexdigest()


@cache
def environment() -> dict:
    """What of this process's environment can change results: Python, platform, CPU model
    and vector extensions (:func:`conformance.host.cpu_description`), every installed
    distribution (:func:`conformance.host.versions`), :data:`ENV_VARS`."""
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(),
            "cpu": cpu_description(), "distributions": versions(),
            "variables": {k: os.environ.get(k) for k in ENV_VARS}}


def key(port: str | None = None) -> dict[str, str]:
    """The key of records made by this process (of ``port``: its own code counts too)."""
    env = json.dumps(environment(), sort_keys=True).encode()
    return {"code": port_code_digest(port), "shared": shared_digest(),
            "environment": hashlib.sha256(env).hexdigest()}


def paths(port: str, results: Path | None = None) -> tuple[Path, Path]:
    base = results or RESULTS
    return base / f"{port}.json", base / f"{port}.npz"


def read(port: str, results: Path | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """The stored file of ``port`` (``{}`` when absent or of another schema) and its logits."""
    jpath, npath = paths(port, results)
    try:
        doc = json.loads(jpath.read_text())
    except (OSError, ValueError):
        return {}, {}
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        return {}, {}
    logits: dict[str, np.ndarray] = {}
    try:
        raw = npath.read_bytes()
    except OSError:
        return doc, logits
    if doc.get("logits_sha256") != hashlib.sha256(raw).hexdigest():
        return doc, logits  # not the logits this record was written with
    with np.load(io.BytesIO(raw)) as data:
        logits = {k: data[k] for k in data.files}
    return doc, logits


def current(port: str) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Records (by case id) and logits of ``port`` whose key equals this process's key;
    empty when there are none, they are stale, or ``SQUEEZENET_RECOMPUTE=1``."""
    if os.environ.get("SQUEEZENET_RECOMPUTE") == "1":
        return {}, {}
    doc, logits = read(port)
    if doc.get("key") != key(port):
        return {}, {}
    return {r["id"]: r for r in doc.get("cases", [])}, logits


def _locked(port: str):
    """Hold an exclusive lock on ``PORT.lock`` (processes that record the same port at the
    same time, e.g. pytest-xdist workers, merge instead of overwriting each other)."""
    return file_lock(paths(port)[0].with_suffix(".lock"))


@contextmanager
def file_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while in the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            yield
            return
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def reusable(record: dict | None, has_logits: bool) -> bool:
    """Whether a current record can stand for its case: it exists and, where it promised
    logits for the port-vs-port comparison, they are stored too."""
    return record is not None and (has_logits or not record.get("logits"))


def write(port: str, records: dict[str, dict], logits: dict[str, np.ndarray], *,
          finished: bool = True) -> None:
    """Store ``records`` (by case id) and ``logits`` of ``port`` under this process's key,
    merged with the current ones already stored, marked ``finished`` or not (a run that
    is still going, or that was killed, leaves ``false``) and with this process's run id;
    each file replaced atomically."""
    with _locked(port):
        _write(port, records, logits, finished)


def _write(port: str, records: dict[str, dict], logits: dict[str, np.ndarray],
           finished: bool) -> None:
    from ports.formats._io import atomic_write

    old_records, old_logits = current(port)
    records = {**old_records, **records}
    logits = {**{k: v for k, v in old_logits.items() if k in records}, **logits}
    jpath, npath = paths(port)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v, np.float32) for k, v in logits.items()})
    env = environment()
    doc = {"schema": SCHEMA, "port": port, "key": key(port), "finished": finished,
           "run": os.environ.get(RUN_VAR),
           "logits_sha256": hashlib.sha256(buffer.getvalue()).hexdigest(),
           "python": env["python"], "platform": env["platform"], "cpu": env["cpu"],
           "versions": env["distributions"], "variables": env["variables"],
           "releases": releases.requested(),
           "cases": sorted(records.values(), key=lambda r: r["id"])}
    # killed between the two, the writer leaves a record whose logits digest does not
    # match the logits file: its logits are then not read, and the record fails verdict()
    atomic_write(npath, buffer.getvalue())
    atomic_write(jpath, json.dumps(doc, indent=1).encode())


def check_gathered(doc: dict, port: str | None = None) -> str | None:
    """Why a result file made elsewhere (another CI job) cannot be reported here, or None:
    its code (ours, and an out-of-tree port's own) or shared data differ from this
    checkout's, or its schema is unknown."""
    if doc.get("schema") != SCHEMA:
        return f"schema {doc.get('schema')!r}, expected {SCHEMA}"
    k = doc.get("key", {})
    if k.get("code") != port_code_digest(port):
        return ("computed from other code than this checkout's ports/ and conformance/"
                + (" and the port's own module" if port and port_digest(port) else ""))
    if k.get("shared") != shared_digest():
        return "computed with other shared ground-truth data"
    return None


# values of a logits record that may be infinite: the relative error where the expected
# logit is exactly 0 (harness.compare)
_MAY_BE_INFINITE = {"max_rel"}


def _nonfinite_fields(record: dict) -> list[str]:
    """The numeric fields of ``record`` (lists included) holding a NaN, or an infinity
    where the value must be finite."""
    def finite(value, infinite_ok: bool) -> bool:
        if isinstance(value, bool) or value is None:
            return True
        if isinstance(value, (int, float)):
            return not math.isnan(value) and (infinite_ok or not math.isinf(value))
        if isinstance(value, (list, tuple)):
            return all(finite(v, infinite_ok) for v in value)
        return True

    logits_kind = record.get("kind") in ("golden", "fixture")
    return [k for k, v in record.items()
            if not finite(v, logits_kind and k in _MAY_BE_INFINITE)]


def verdict(port: str, doc: dict, logits: dict[str, np.ndarray], expected: list[str],
            run: str | None = None) -> str | None:
    """Why ``port``'s result file (``doc`` and its ``logits``) cannot stand for a verdict,
    or None: :func:`check_gathered` (code, shared data, schema), then the run that wrote
    it did not finish (or, given ``run``, is another run), a case of ``expected`` (ids) is
    not in it, a value in it is not finite, or logits it promises are missing.  Each reason
    says how many cases and names the first."""
    if not doc:
        return "no result file"
    why = check_gathered(doc, port)
    if why:
        return why
    by_id = {r.get("id"): r for r in doc.get("cases", [])}
    missing = [c for c in expected if c not in by_id]
    count = f"{len(expected) - len(missing)} of {len(expected)} cases recorded"
    if missing:
        count += f"; not recorded: {_first(missing)}"
    if doc.get("finished") is not True:
        return f"the run that wrote it did not finish ({count})"
    if run is not None and doc.get("run") != run:
        return f"written by another run ({doc.get('run')}), not this one ({count})"
    if missing:
        return count
    bad = []
    for case in expected:
        r = by_id[case]
        fields = _nonfinite_fields(r)
        if fields:
            bad.append(f"{case} ({', '.join(fields)})")
        elif r.get("logits") and case not in logits:
            bad.append(f"{case} (its logits are not in the logits file)")
        elif case in logits and not np.isfinite(logits[case]).all():
            n = int((~np.isfinite(logits[case])).sum())
            bad.append(f"{case} ({n} of {logits[case].size} logits)")
    if bad:
        return f"not finite or incomplete in {len(bad)} cases: {_first(bad)}"
    return None


def _first(items: list[str], shown: int = 3) -> str:
    """The first ``shown`` of ``items`` and how many more."""
    more = len(items) - shown
    return ", ".join(items[:shown]) + (f" and {more} more" if more > 0 else "")
