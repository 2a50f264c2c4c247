"""Recorded conformance results, and the key that says whether they are still current.

A port's results live in ``build/conformance/PORT.json`` (one record per case) and
``PORT.npz`` (its logits, float32-rounded, for port-vs-port comparison).  Whoever computes a
case records it: the port's test module (``tox -e torch``) or ``python -m
conformance.collect`` (the matrix).  The other reuses a record only while its **key** equals
the key of the process about to compute it:

``code``         SHA-256 of every file of the ``ports`` package and of ``conformance/``
                 (the ports, the harness, the goldens, the inputs, the tolerance table);
``shared``       SHA-256 of the shared ground-truth files the fixtures read (or which are
                 missing);
``environment``  SHA-256 of the Python version, the platform, every installed distribution
                 and its version, and the environment variables that change results
                 (``ENV_VARS``).

A record with any other key is stale and is recomputed, never reported.  The file carries
``schema`` (:data:`SCHEMA`); a file of another schema is ignored.  ``SQUEEZENET_RECOMPUTE=1``
recomputes everything.  Gathering results from other machines (``matrix --no-run``) can
check only the ``code`` and ``shared`` parts: see :func:`check_gathered`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np

from . import releases
from .harness import RESULTS

SCHEMA = 1
ENV_VARS = ("KERAS_BACKEND", "JAX_ENABLE_X64", "OMP_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS",
            "XLA_FLAGS", "MXNET_ENGINE_TYPE")
_SOURCE_SUFFIXES = {".py", ".toml", ".npz", ".txt", ".json", ".proto"}


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in _SOURCE_SUFFIXES and "__pycache__" not in path.parts:
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
def shared_digest() -> str:
    from .fixtures import shared_files

    h = hashlib.sha256()
    for relative, path in shared_files():
        h.update(relative.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest() if path.is_file() else b"missing")
    return h.hexdigest()


@cache
def versions() -> dict[str, str]:
    """Every installed distribution -> version, in this interpreter."""
    from importlib import metadata

    out = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name:
            out[name.lower().replace("_", "-")] = dist.version
    return dict(sorted(out.items()))


@cache
def environment() -> dict:
    return {"python": sys.version.split()[0], "implementation": platform.python_implementation(),
            "platform": platform.platform(), "machine": platform.machine(),
            "distributions": versions(),
            "variables": {k: os.environ.get(k) for k in ENV_VARS}}


def key() -> dict[str, str]:
    env = json.dumps(environment(), sort_keys=True).encode()
    return {"code": code_digest(), "shared": shared_digest(),
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
    if npath.exists():
        with np.load(npath) as data:
            logits = {k: data[k] for k in data.files}
    return doc, logits


def current(port: str) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """Records (by case id) and logits of ``port`` whose key equals this process's key;
    empty when there are none, they are stale, or ``SQUEEZENET_RECOMPUTE=1``."""
    if os.environ.get("SQUEEZENET_RECOMPUTE") == "1":
        return {}, {}
    doc, logits = read(port)
    if doc.get("key") != key():
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


def write(port: str, records: dict[str, dict], logits: dict[str, np.ndarray]) -> None:
    """Store ``records`` (by case id) and ``logits`` of ``port`` under this process's key,
    merged with the current ones already stored; each file replaced atomically."""
    with _locked(port):
        _write(port, records, logits)


def _write(port: str, records: dict[str, dict], logits: dict[str, np.ndarray]) -> None:
    old_records, old_logits = current(port)
    records = {**old_records, **records}
    logits = {**{k: v for k, v in old_logits.items() if k in records}, **logits}
    jpath, npath = paths(port)
    jpath.parent.mkdir(parents=True, exist_ok=True)
    env = environment()
    doc = {"schema": SCHEMA, "port": port, "key": key(),
           "python": env["python"], "platform": env["platform"],
           "versions": env["distributions"], "variables": env["variables"],
           "releases": releases.requested(),
           "cases": sorted(records.values(), key=lambda r: r["id"])}
    tmp = npath.with_name(f".{port}.{os.getpid()}.part.npz")
    np.savez(tmp, **{k: np.asarray(v, np.float32) for k, v in logits.items()})
    tmp.replace(npath)
    tmp = jpath.with_name(f".{port}.{os.getpid()}.json.part")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(jpath)


def check_gathered(doc: dict) -> str | None:
    """Why a result file made elsewhere (another CI job) cannot be reported here, or None:
    its code or shared data differ from this checkout's, or its schema is unknown."""
    if doc.get("schema") != SCHEMA:
        return f"schema {doc.get('schema')!r}, expected {SCHEMA}"
    k = doc.get("key", {})
    if k.get("code") != code_digest():
        return "computed from other code than this checkout's ports/ and conformance/"
    if k.get("shared") != shared_digest():
        return "computed with other shared ground-truth data"
    return None
