"""The port protocol: what every ``ports.<framework>`` package offers, and the parts of it
that are the same in every framework (written once, here).

Every port exposes, with these signatures and defaults::

    SqueezeNet(version="1_1", num_classes=1000, final_conv_padding=0, bypass="none", *,
               dtype="float32")          # the network built from ports.spec; `version`
                                         # may be a ports.spec.Variant instead
    load(source, dtype="float32", *, variant=None, fast=True) -> model   # inference mode
    predict(model, x, batch_size=BATCH_SIZE) -> np.ndarray      # NCHW [N,3,H,W] -> [N, classes]
    to_weights(model, *, preprocessing="none", source=None) -> ports.formats.canonical.Weights

``source`` is a weights file of any format :mod:`ports.formats` reads, or
:class:`~ports.formats.canonical.Weights`; ``variant``, where given, is the architecture the
file must hold (files that do not record all of it take the rest from there).  ``fast``: the
port's tuned layers (``ports.<framework>.fast``: fused, re-laid-out or per-backend
computations, tested equal to the plain ones) where it has them and they are faster;
``fast=False`` is the plain reference network of ``ports.<framework>`` itself.  Ports without
tuned layers give the same network either way.  ``model.variant`` is the model's
:class:`~ports.spec.Variant`.  ``predict`` returns the pre-softmax scores in the model's
dtype.  The NumPy reference differs only in its default dtype, float64.

Reduced precision: a port whose framework computes bfloat16 on the CPU (torch, Keras on
each backend, Flax) also takes ``dtype="bfloat16"`` (:func:`dtype_name`): parameters and
activations in bfloat16; ``predict`` and ``activations`` take float input and return float32
arrays (bfloat16 widened exactly: NumPy itself has no bfloat16).
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, TypeVar

import numpy as np

from .formats.canonical import Weights, check, make
from .spec import Variant

BATCH_SIZE = 32
DTYPES = ("float32", "float64")
REDUCED = ("bfloat16",)  # the ports that compute it say so (conformance.registry: reduced)
BFLOAT16_EPS = 2.0 ** -7  # its machine epsilon (8 significant bits), which NumPy cannot give

M = TypeVar("M")


class Step(NamedTuple):
    """One optimizer step of a training port's ``train_steps``, which returns one per rate.

    Caffe's solver rule, ``v <- m v + lr (g + wd w)`` then ``w <- w - v``: ``loss`` before
    the step; ``grad``, the loss's gradient ``g`` the step used (the decay not included);
    ``velocity``, ``v`` after the step (what was subtracted from the weights, in Caffe's
    sign and scale whatever the framework keeps); ``weights``, ``w`` after the step.  Each
    ``{canonical name: array}``, OIHW, the model's dtype."""

    loss: float
    grad: dict
    velocity: dict
    weights: dict


def variant(version="1_1", num_classes: int = 1000, final_conv_padding: int = 0,
            bypass: str = "none") -> Variant:
    """The :class:`Variant` a ``SqueezeNet(...)`` call names (``version`` may be one)."""
    if isinstance(version, Variant):
        return version
    return Variant(version, num_classes, final_conv_padding, bypass)


def dtype(value) -> np.dtype:
    """``value`` as a NumPy dtype, float32 or float64 (else ``ValueError``)."""
    dt = np.dtype(value)
    if dt.name not in DTYPES:
        raise ValueError(f"dtype: expected one of {DTYPES}, got {dt.name}")
    return dt


def dtype_name(value, reduced: tuple[str, ...] = REDUCED) -> str:
    """``value`` (a name, NumPy or ml_dtypes dtype) as one of :data:`DTYPES` or of the
    ``reduced`` names this port computes (else ``ValueError``), without importing
    ml_dtypes."""
    name = value if isinstance(value, str) else \
        getattr(value, "name", None) or getattr(value, "__name__", None) or str(value)
    if name in reduced:
        return name
    if name in REDUCED:
        raise ValueError(f"dtype: {name} is not computed by this port (it takes "
                         f"{', '.join(DTYPES + reduced)})")
    return dtype(value).name


def widened(a) -> np.ndarray:
    """``a`` as a NumPy array in its dtype, bfloat16 (an ml_dtypes array, which NumPy cannot
    compute with) widened exactly to float32: what ``predict`` and ``activations`` return."""
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.name == "bfloat16" else a


def weights(source, variant: Variant | None = None) -> Weights:
    """``source`` itself if it is :class:`Weights` (checked when built; of ``variant``, if
    given), else the file read by its format."""
    if isinstance(source, Weights):
        return check(source, variant)
    from .formats import read

    return read(source, variant=variant)


def load(build: Callable[[Variant, np.dtype], M], fill: Callable[[M, Weights], M], source,
         dtype_, variant_: Variant | None = None) -> M:
    """The body of every port's ``load``: read ``source``, build the network it holds with
    ``build(variant, dtype)`` and copy the weights in with ``fill(model, weights)``."""
    w = weights(source, variant_)
    return fill(build(w.variant, dtype(dtype_)), w)


def batches(x: np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Consecutive slices of at most ``batch_size`` images."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    for i in range(0, len(x), batch_size):
        yield x[i:i + batch_size]


def activation_names(variant_: Variant, layers=None) -> list[str]:
    """The names ``activations(model, x, layers)`` returns, in network order: all of
    ``variant_.activation_names()``, or those in ``layers`` (unknown names are refused)."""
    names = variant_.activation_names()
    if layers is None:
        return names
    wanted = [layers] if isinstance(layers, str) else list(layers)
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise ValueError(f"layers: {unknown} are not activations of SqueezeNet {variant_.id}; "
                         f"known: {', '.join(names)}")
    return [n for n in names if n in wanted]


def to_weights(tensors: dict[str, np.ndarray], variant_: Variant, framework: str, *,
               preprocessing: str, source: str | None) -> Weights:
    """Canonical float32 weights from a port's tensors (already canonical names, OIHW)."""
    return make(tensors, variant_, preprocessing=preprocessing,
                source=source or f"ports.{framework}")
