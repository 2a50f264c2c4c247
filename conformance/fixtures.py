"""Real-weights fixtures: expected logits that do not come from the seeded goldens.

Each :class:`Fixture` names its weights, inputs and expected logits (e.g. real Caffe's own
output) and, optionally, the top-1 class each input must get.  Fixtures whose data lives in
the shared folder are skipped (with the reason) when it is absent, unless
``SQUEEZENET_REQUIRE_SHARED=1`` turns that skip into a failure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ports.canonical import Weights

ROOT = Path(__file__).resolve().parent.parent


class SharedDataMissing(Exception):
    """The shared ground-truth folder (or a file in it) is absent."""


def shared_dir() -> Path:
    """``$SQUEEZENET_SHARED`` or ``../shared`` beside the checkout."""
    env = os.environ.get("SQUEEZENET_SHARED")
    return Path(env) if env else ROOT.parent / "shared"


def shared(relative: str) -> Path:
    p = shared_dir() / relative
    if not p.exists():
        raise SharedDataMissing(f"shared data {p} not found (set SQUEEZENET_SHARED to the "
                                f"folder holding weights/)")
    return p


def require_shared() -> bool:
    return os.environ.get("SQUEEZENET_REQUIRE_SHARED") == "1"


@dataclass
class Fixture:
    """``weights()`` -> Weights; ``inputs()`` -> [N,3,H,W] float32; ``expected()`` -> logits
    [N, classes]; ``tolerance``: the ``[fixture.NAME]`` key in tolerances.toml, or None for
    the port defaults; ``top1``: class each input must get, if known."""

    name: str
    weights: Callable[[], Weights]
    inputs: Callable[[], np.ndarray]
    expected: Callable[[], np.ndarray]
    tolerance: str | None = None
    top1: list[int] | None = None
    top3_contains: dict = field(default_factory=dict)  # image index -> classes in top 3


FIXTURES: list[Fixture] = []
