"""Seed files: valid files of each format that both engines start from.

For a format, seed files are written with the codec's own ``write`` from seeded weights
(small ``num_classes`` keeps them fast), or taken from the shared real files for read-only
codecs.  Each written seed gets a *twin* written from differently seeded weights; bytes
equal in both (runs of 4 or more) are the file's structure (headers, names, lengths,
offsets): the mutation engine aims most mutations at them.  Shared files without a twin use
runs of printable text instead.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ports import formats
from ports.errors import WeightsError
from ports.spec import Variant

from .._data import shared_dir

ROOT = Path(__file__).resolve().parents[2]
# Seed variants, in order of preference (small num_classes keeps files small and fast);
# 1000-class ones for codecs whose files do not record the class count.
CANDIDATES = (Variant("1_1", 10, 0, "none"), Variant("1_0", 10, 1, "complex"),
              Variant("1_1", 1000, 0, "none"), Variant("1_0", 1000, 1, "none"))
# Real files for codecs that cannot write (and extra seeds for those that can), relative to
# the shared folder.
SHARED_SEEDS = {
    "caffe": ("weights/caffe-real/squeezenet_v1.0_deep_compression.caffemodel",
              "weights/caffe-real/squeezenet_v1.1_seeded.caffemodel"),
    "deepcompression": ("weights/deep-compression/compressed_SqueezeNet.net",),
}
# Directory formats (a checkpoint is a folder): the files inside a written seed that are
# mutated, one seed each (the rest of the folder stays as written).
MEMBERS = {
    "orbax": ("_METADATA", "_CHECKPOINT_METADATA", "conv1.kernel.value/.zarray",
              "conv1.kernel.value/0.0.0.0"),
    "coreml-package": ("Manifest.json", "Data/com.apple.CoreML/model.mlmodel",
                       "Data/com.apple.CoreML/weights/weight.bin"),
}


def _print(message: str) -> None:
    print(message, flush=True)


# --- which codecs can be fuzzed ------------------------------------------------------------
def availability(name: str) -> str | None:
    """``None`` if format ``name`` can be fuzzed here, else why not (one line)."""
    module = formats.FORMATS[name][0]
    if importlib.util.find_spec(f"{formats.__name__}.{module}") is None:
        return f"codec module ports/formats/{module}.py does not exist yet"
    try:
        mod = formats.codec(name)
    except ImportError as e:
        return f"optional dependency missing: {e}"
    if not hasattr(mod, "read"):
        return f"ports/formats/{module}.py has no read() yet"
    return None


# --- seeds ---------------------------------------------------------------------------------
@dataclass
class Seed:
    path: Path                 # the file to mutate
    companions: list[Path]     # other files the codec wrote beside it
    hot: np.ndarray            # int64 offsets of structural bytes (may be empty)
    label: str
    root: Path | None = None   # a directory format's folder (read); ``path`` is inside it

    @property
    def target(self) -> Path:
        """What a case reads: the mutated file, or the folder holding it."""
        return self.path if self.root is None else self.root


def _equal_runs(a: bytes, b: bytes, min_run: int = 4) -> np.ndarray:
    """Offsets where ``a`` and ``b`` agree in runs of at least ``min_run`` bytes."""
    m = min(len(a), len(b))
    if m == 0:
        return np.zeros(0, np.int64)
    eq = np.frombuffer(a, np.uint8, m) == np.frombuffer(b, np.uint8, m)
    padded = np.concatenate([[False], eq, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    starts, stops = edges[0::2], edges[1::2]
    keep = (stops - starts) >= min_run
    if not keep.any():
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(s, e) for s, e in zip(starts[keep], stops[keep])])


_TEXT = re.compile(rb"[\x20-\x7e]{6,}")


def _text_runs(data: bytes) -> np.ndarray:
    """Offsets of printable text runs (6+ bytes) and 16 bytes either side."""
    spans = [(max(0, m.start() - 16), min(len(data), m.end() + 16))
             for m in _TEXT.finditer(data)]
    if not spans:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate([np.arange(s, e) for s, e in spans]))


def quantized(weights, levels: int = 255):
    """``weights`` with every weight tensor snapped to ``levels`` evenly spaced values (for
    codecs that store a small codebook per layer, e.g. Deep Compression's 8-bit one)."""
    from ports.formats.canonical import Weights

    tensors = {}
    for name, t in weights.tensors.items():
        if name.endswith(".weight"):
            lo, hi = float(t.min()), float(t.max())
            step = (hi - lo) / (levels - 1) or 1.0
            t = (lo + np.round((t - lo) / step) * step).astype(np.float32)
        tensors[name] = t
    return Weights(tensors, dict(weights.meta))


def write_seeded(name: str, variant: Variant, dest: Path, twin: int = 0) -> None:
    """Write seeded weights for ``variant`` with codec ``name``; a codebook format, which
    cannot store them as they are, gets them Deep-Compressed (the release's densities, 4-bit
    codebooks: what such files hold).  Raises WeightsError if it cannot write them at all."""
    from ports.formats.compress import compress
    from ports.seeded import seeded_weights

    weights = seeded_weights(variant, seed=twin)
    try:
        formats.write(weights, dest, name)
    except WeightsError:
        formats.write(compress(weights, 4).weights(), dest, name)


def build_seeds(name: str, directory: Path, log: Callable[[str], None] = _print, *,
                hostile: bool = True) -> list[Seed]:
    """Write (or collect) the seed files of format ``name`` under ``directory``: the first
    two :data:`CANDIDATES` the codec writes and reads back, shared files, and (``hostile``)
    the files of :mod:`ports.fuzz.hostile` that point out of themselves (last, so
    that without them the seeds, and so every case, are those of earlier campaigns)."""
    mod = formats.codec(name)
    ext = formats.FORMATS[name][1][0]
    seeds: list[Seed] = []
    variants = 0
    if hasattr(mod, "write"):
        for k, variant in enumerate(CANDIDATES):
            if variants == 2:
                break
            paths = []
            for twin in (0, 1):
                d = directory / name / f"seed{k}-{twin}"
                shutil.rmtree(d, ignore_errors=True)
                d.mkdir(parents=True)
                dest = d / f"seed{k}{ext}"
                try:
                    write_seeded(name, variant, dest, twin)
                    formats.read(dest, name)
                except WeightsError as e:
                    log(f"{name}: {variant.id} does not write and read back ({e}); "
                        "trying the next variant")
                    paths = []
                    break
                paths.append(dest)
            if not paths:
                continue
            variants += 1
            main = paths[0]
            if main.is_dir():
                for rel in MEMBERS[name]:
                    hot = _equal_runs((main / rel).read_bytes(), (paths[1] / rel).read_bytes())
                    seeds.append(Seed(main / rel, [], hot, f"written {variant.id} {rel}",
                                      root=main))
                continue
            hot = _equal_runs(main.read_bytes(), paths[1].read_bytes())
            companions = [p for p in main.parent.iterdir() if p != main]
            seeds.append(Seed(main, companions, hot, f"written {variant.id}"))
    for rel in SHARED_SEEDS.get(name, ()):
        p = shared_dir() / rel
        if not p.is_file():
            log(f"{name}: shared seed {p} not found; skipped")
            continue
        seeds.append(Seed(p, [], _text_runs(p.read_bytes()), f"shared {p.name}"))
    if not seeds:
        raise RuntimeError(f"{name}: no seed file (cannot write and no shared file)")
    if hostile:
        from .hostile import build_all

        d = directory / name / "hostile"
        shutil.rmtree(d, ignore_errors=True)
        for case in build_all(name, d):
            if case.seed:   # their mutants must be refused as they are
                seeds.append(Seed(case.path, [], _text_runs(case.path.read_bytes()),
                                  f"hostile: {case.label}"))
    return seeds
