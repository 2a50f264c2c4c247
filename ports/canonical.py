"""Canonical weights: float32 OIHW tensors under canonical names, plus metadata.

Every codec reads into and writes from :class:`Weights`; the on-disk canonical format is
safetensors (``ports.formats.safetensors``).

Metadata (all values strings):

==================== ===========================================================
``variant``          ``"1_0"`` or ``"1_1"``
``num_classes``      e.g. ``"1000"``
``final_conv_padding`` ``"0"`` or ``"1"``
``bypass``           ``"none"``, ``"simple"`` or ``"complex"``
``preprocessing``    a mode of :mod:`ports.preprocess` (``"caffe"``, ``"torchvision"``)
``source``           where the numbers came from (free text)
==================== ===========================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .errors import WeightsError
from .spec import Variant

REQUIRED_META = ("variant", "num_classes", "final_conv_padding", "bypass",
                 "preprocessing", "source")
PREPROCESSING_MODES = ("caffe", "torchvision", "none")


@dataclass
class Weights:
    """``tensors``: canonical name -> float32 array (weights OIHW, biases [O]).
    ``meta``: string metadata, see the module docstring."""

    tensors: dict[str, np.ndarray]
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def variant(self) -> Variant:
        try:
            return Variant.from_meta(self.meta)
        except ValueError as e:
            raise WeightsError(f"metadata: {e}") from None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def num_params(self) -> int:
        return int(sum(t.size for t in self.tensors.values()))


def make(tensors: Mapping[str, np.ndarray], variant: Variant, *, preprocessing: str,
         source: str, **extra: str) -> Weights:
    """Build checked :class:`Weights` for ``variant`` (tensors cast to float32)."""
    meta = {**variant.to_meta(), "preprocessing": preprocessing, "source": source}
    meta.update({k: str(v) for k, v in extra.items()})
    weights = Weights({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                      meta)
    check(weights)
    return weights


def check(weights: Weights, expected: Variant | None = None, *, path=None,
          format: str | None = None) -> Weights:
    """Strict validation against the spec; returns ``weights``.

    Raises one :class:`WeightsError` listing every missing, unexpected and mis-shaped
    tensor (with expected and actual shapes), bad dtype, non-finite value, missing
    metadata field, or a variant other than ``expected``.
    """
    problems: list[str] = []
    missing_meta = [k for k in REQUIRED_META if k not in weights.meta]
    if missing_meta:
        raise WeightsError(f"metadata lacks {', '.join(missing_meta)}", path=path, format=format)
    if weights.meta["preprocessing"] not in PREPROCESSING_MODES:
        problems.append(f"metadata preprocessing={weights.meta['preprocessing']!r}, "
                        f"expected one of {PREPROCESSING_MODES}")
    try:
        variant = Variant.from_meta(weights.meta)
    except ValueError as e:
        raise WeightsError(f"metadata: {e}", path=path, format=format) from None
    if expected is not None and variant != expected:
        problems.append(f"variant {variant.id} (from metadata), expected {expected.id}")
        variant = expected
    spec = variant.params()
    missing = [k for k in spec if k not in weights.tensors]
    unexpected = [k for k in weights.tensors if k not in spec]
    if missing:
        problems.append("missing tensors: " + ", ".join(missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(sorted(unexpected)))
    for name, shape in spec.items():
        t = weights.tensors.get(name)
        if t is None:
            continue
        if tuple(t.shape) != shape:
            problems.append(f"{name}: expected shape {list(shape)}, got {list(t.shape)}")
        elif t.dtype != np.float32:
            problems.append(f"{name}: expected dtype float32, got {t.dtype}")
        elif not np.isfinite(t).all():
            problems.append(f"{name}: {int((~np.isfinite(t)).sum())} non-finite values")
    if problems:
        raise WeightsError(f"does not match SqueezeNet {variant.id}: " + "; ".join(problems),
                           path=path, format=format)
    return weights
