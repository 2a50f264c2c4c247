"""Real-weights fixtures: expected logits that do not come from the seeded goldens.

Each :class:`Fixture` names its weights, inputs and expected logits (e.g. real Caffe's own
output) and, optionally, the top-1 class each input must get.  Fixtures whose data lives in
the shared folder are skipped (with the reason) when it is absent, unless
``SQUEEZENET_REQUIRE_SHARED=1`` turns that skip into a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, NoReturn

import numpy as np

from ports._data import shared_dir
from ports.formats.canonical import Weights


class SharedDataMissing(Exception):
    """The shared ground-truth folder (or a file in it) is absent."""


def shared(relative: str) -> Path:
    p = shared_dir() / relative
    if not p.exists():
        raise SharedDataMissing(f"shared data {p} not found (set SQUEEZENET_SHARED to the "
                                f"folder holding weights/)")
    return p


def require_shared() -> bool:
    return os.environ.get("SQUEEZENET_REQUIRE_SHARED") == "1"


def shared_or_skip(relative: str) -> Path:
    """``shared(relative)`` for a test: skip it with the reason when the shared folder is
    absent, or fail when ``SQUEEZENET_REQUIRE_SHARED=1`` (as in CI)."""
    try:
        return shared(relative)
    except SharedDataMissing as e:
        skip_missing(e)


def skip_missing(e: SharedDataMissing) -> NoReturn:
    """Skip the running test because the shared folder is absent (the reason names the
    path), or fail it when ``SQUEEZENET_REQUIRE_SHARED=1`` (as in CI)."""
    import pytest

    if require_shared():
        pytest.fail(f"SQUEEZENET_REQUIRE_SHARED=1 but {e}")
    pytest.skip(str(e))


@dataclass
class Fixture:
    """``weights()`` -> Weights; ``inputs()`` -> [N,3,H,W] float32; ``expected()`` -> logits
    [N, classes]; ``tolerance``: the ``[fixture.NAME]`` key in tolerances.toml, or None for
    the port defaults; ``top1``: class each input must get, if known; ``files``: the
    shared files it reads (part of the key of recorded results)."""

    name: str
    weights: Callable[[], Weights]
    inputs: Callable[[], np.ndarray]
    expected: Callable[[], np.ndarray]
    tolerance: str | None = None
    top1: list[int] | None = None
    top3_contains: dict = field(default_factory=dict)  # image index -> classes in top 3
    files: tuple[str, ...] = ()  # the shared files it reads, relative to the shared folder


# --- real Caffe's own logits ---------------------------------------------------------------
# ``weights/caffe-real/*.caffe_logits.npz``: ``x`` [N,3,227,227] float32 (Caffe preprocessing:
# BGR, 0-255 minus (104, 117, 123)), ``logits`` [N,1000] float32: real Caffe's ``pool10``.
CAFFE_REAL = "weights/caffe-real"
DC_NET = "weights/deep-compression/compressed_SqueezeNet.net"


@lru_cache(maxsize=4)
def _npz(relative: str) -> dict[str, np.ndarray]:
    with np.load(shared(relative)) as data:
        return {k: data[k] for k in data.files}


@lru_cache(maxsize=2)
def _weights(relative: str) -> Weights:
    """A shared weights file read by our own codec (the Deep Compression ``.net`` is
    decoded from the release itself, not from Caffe's file)."""
    from ports.formats import read

    return read(shared(relative))


def _caffe_real(name: str, stem: str, weights_file: str, **classes) -> Fixture:
    """Real Caffe's logits ``CAFFE_REAL/STEM.caffe_logits.npz`` for the weights in
    ``weights_file`` (a Deep Compression ``.net``, decoded by our codec, or a
    ``.caffemodel``)."""
    npz = f"{CAFFE_REAL}/{stem}.caffe_logits.npz"
    return Fixture(name, lambda: _weights(weights_file), lambda: _npz(npz)["x"],
                   lambda: _npz(npz)["logits"], tolerance="caffe-real",
                   files=(weights_file, npz), **classes)


@lru_cache(maxsize=1)
def _compressed(bits: int = 6) -> Weights:
    """The release compressed again to ``bits``-bit codebooks by ``tools/compress``'s pipeline
    and read back from the compact ``.dcz`` bytes it writes."""
    from ports.formats import compress, dcz

    c = compress.compress(_weights(DC_NET), bits)
    return dcz.decode(dcz.pack(c.meta, c.bits, c.layers))


def _reference_logits(weights: Callable[[], Weights], x: Callable[[], np.ndarray]):
    """The float64 NumPy reference's logits (the oracle, as for the seeded goldens)."""
    def expected() -> np.ndarray:
        from ports import numpy as ref

        return ref.predict(ref.load(weights(), "float64"), x().astype(np.float64))
    return expected


_CHELSEA_COFFEE = f"{CAFFE_REAL}/squeezenet_v1.0_deep_compression.caffe_logits.npz"

FIXTURES: list[Fixture] = [
    # Real ImageNet weights: chelsea (a cat: 285 Egyptian cat, 281 tabby / 282 tiger cat in
    # the top 3) and coffee (967 espresso), as real Caffe classified them.
    _caffe_real("caffe-real-v1_0", "squeezenet_v1.0_deep_compression", DC_NET,
                top1=[285, 967], top3_contains={0: [281, 282]}),
    # Seeded v1.1 weights saved by real Caffe: at 227 its ceil-mode pooling changes the grid.
    _caffe_real("caffe-real-v1_1", "squeezenet_v1.1_seeded",
                f"{CAFFE_REAL}/squeezenet_v1.1_seeded.caffemodel"),
    # The release compressed to 6 bits (tools/compress) and read from its .dcz: every port
    # and engine loads the compact container; chelsea and coffee keep their classes.
    Fixture("dcz-6bit-v1_0", _compressed, lambda: _npz(_CHELSEA_COFFEE)["x"],
            _reference_logits(_compressed, lambda: _npz(_CHELSEA_COFFEE)["x"]),
            top1=[285, 967], files=(DC_NET, _CHELSEA_COFFEE)),
]


def shared_files() -> list[tuple[str, Path]]:
    """Every shared file the fixtures read: (path relative to the shared folder, path)."""
    names = sorted({name for f in FIXTURES for name in f.files})
    return [(name, shared_dir() / name) for name in names]
