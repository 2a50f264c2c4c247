"""Layer-by-layer comparison: say *where* two implementations part ways.

Every port (and engine) exposes ``activations(model, x, layers=None) -> {name: array}`` for
the names of :meth:`ports.spec.Variant.activation_names` (canonical NCHW, ``[N, C]`` after the
global pool).  :func:`compare` puts one implementation's activations beside a reference's
(normally the float64 NumPy oracle) and gives, per layer:

``max_abs``   largest absolute difference;
``max_rel``   ``max_abs`` divided by the layer's largest ``|reference|``;
``cosine``    cosine similarity of the flattened activations;
``snr_db``    ``10 log10(sum ref^2 / sum (act - ref)^2)`` (``inf`` when identical).

The **first divergent layer** is the first whose ``max_rel`` exceeds
:func:`threshold` for the compared dtype: ``2**12`` unit roundoffs (``u = eps / 2``), i.e.
2.4e-4 for float32 and 4.5e-13 for float64.  Honest rounding grows far slower: an ordered
float32 port accumulates at most a few hundred roundoffs over SqueezeNet's 26 layers (its
longest dot product, expand3x3 of fire9, sums 576 terms; measured worst ``max_rel`` per port
is in ``docs/trace.md``), while every porting mistake we inject moves the layer it enters by
1e-2 or more.  A layer whose shape differs is divergent outright.
"""

from __future__ import annotations

import math

import numpy as np

FACTOR = 2 ** 12


def threshold(dtype) -> float:
    """Largest honest ``max_rel`` for a computation in ``dtype``: ``FACTOR`` unit roundoffs."""
    return FACTOR * float(np.finfo(np.dtype(dtype)).eps) / 2


def layer_metrics(reference: np.ndarray, actual: np.ndarray) -> dict:
    """``{max_abs, max_rel, cosine, snr_db}`` of ``actual`` against ``reference`` (float64
    arithmetic); ``{"shape": ...}`` with NaN metrics when the shapes differ."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        return {"max_abs": math.nan, "max_rel": math.inf, "cosine": math.nan,
                "snr_db": -math.inf, "shape": f"{list(act.shape)}, expected {list(ref.shape)}"}
    diff = act - ref
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    max_rel = max_abs / scale if scale else (0.0 if max_abs == 0 else math.inf)
    norms = float(np.linalg.norm(ref)) * float(np.linalg.norm(act))
    cosine = float(np.dot(ref.ravel(), act.ravel()) / norms) if norms else \
        (1.0 if max_abs == 0 else 0.0)
    noise = float(np.square(diff).sum())
    signal = float(np.square(ref).sum())
    snr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal else -math.inf)
    return {"max_abs": max_abs, "max_rel": max_rel, "cosine": cosine, "snr_db": snr}


def compare(reference: dict, actual: dict, dtype) -> dict:
    """``{"layers": {name: metrics}, "first_divergent": name or None, "threshold": t}`` for
    the names of ``reference`` (in its order) that ``actual`` has too; a name ``actual`` lacks
    is reported as ``missing`` and counts as divergent."""
    limit = threshold(dtype)
    layers, first = {}, None
    for name, ref in reference.items():
        if name not in actual:
            layers[name] = {"missing": True}
            first = first or name
            continue
        m = layer_metrics(ref, actual[name])
        layers[name] = m
        if first is None and not m["max_rel"] <= limit:
            first = name
    return {"layers": layers, "first_divergent": first, "threshold": limit}
