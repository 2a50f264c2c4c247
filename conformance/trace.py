"""Layer-by-layer comparison: say *where* two implementations part ways.

Every port (and engine) exposes ``activations(model, x, layers=None) -> {name: array}`` for
the names of :meth:`ports.spec.Variant.activation_names` (canonical NCHW, ``[N, C]`` after the
global pool).  :func:`compare` puts one implementation's activations beside a reference's
(normally the float64 NumPy oracle) and gives, per layer:

``max_abs``   largest absolute difference;
``max_rel``   ``max_abs`` divided by the layer's largest ``|reference|``;
``cosine``    cosine similarity of the flattened activations;
``snr_db``    ``10 log10(sum ref^2 / sum (act - ref)^2)`` (``inf`` when identical).

The **first divergent layer** is the first whose ``max_rel`` exceeds :func:`threshold` for
the compared dtype: ``[trace] roundoffs`` unit roundoffs (``u = eps / 2``) from
``tolerances.toml``, 256: 1.5e-5 in float32, 2.8e-14 in float64.  The figure comes from
measurement: every port's worst layer against the float64 reference, over the seeded trace
cases, both paths and both dtypes, is 10 to 49 u (OpenCV's expand3x3 the 49; the others 29 u
at most), and 256 u leaves a margin of 5 over the worst (``docs/trace.md`` has the figures).
A layer whose shape differs is divergent outright.

:func:`compare_against` is the same comparison for one implementation on two weight files
(``tools/trace --against``): a layer whose inputs are bit-identical in the two runs and whose
output differs at all has diverged, and so has one whose difference exceeds the threshold
(more than rounding of an earlier difference explains).  :func:`layer_inputs` gives each
layer's inputs.
"""

from __future__ import annotations

import math

import numpy as np

from ports._api import BFLOAT16_EPS, dtype_name


def roundoffs(dtype="float32") -> float:
    """The trace threshold in unit roundoffs: ``[trace] roundoffs`` of ``tolerances.toml``
    (``roundoffs_bfloat16`` for bfloat16)."""
    from .harness import tolerances_table

    table = tolerances_table()["trace"]
    return float(table["roundoffs_bfloat16" if dtype_name(dtype) == "bfloat16" else "roundoffs"])


def threshold(dtype) -> float:
    """Largest honest ``max_rel`` for a computation in ``dtype``: :func:`roundoffs` unit
    roundoffs ``u = eps / 2`` of ``dtype`` (bfloat16: ``eps = 2^-7``, without ml_dtypes)."""
    eps = BFLOAT16_EPS if dtype_name(dtype) == "bfloat16" else float(np.finfo(np.dtype(dtype)).eps)
    return roundoffs(dtype) * eps / 2


def layer_inputs(variant) -> dict[str, tuple[str, ...]]:
    """``{activation name: the activation names it is computed from}`` for every name of
    ``variant.activation_names()``; ``"input"`` stands for the network's input.  A Fire's
    output reads its two expands and, with a bypass, the Fire's input (identity) or its
    bypass convolution; dropout (the identity at inference) is skipped."""
    from ports import spec as S

    inputs: dict[str, tuple[str, ...]] = {}
    prev, conv_in = "input", "input"
    for layer in variant.layers():
        if isinstance(layer, S.Conv):
            conv_in = prev
        elif isinstance(layer, S.ReLU):
            inputs[layer.of] = (conv_in,)
            prev = layer.of
        elif isinstance(layer, S.MaxPool):
            inputs[layer.name] = (prev,)
            prev = layer.name
        elif isinstance(layer, S.Fire):
            squeeze = layer.squeeze.name
            inputs[squeeze] = (prev,)
            inputs[layer.expand1x1.name] = inputs[layer.expand3x3.name] = (squeeze,)
            added: tuple[str, ...] = ()
            if layer.bypass == "identity":
                added = (prev,)
            elif layer.bypass == "conv":
                inputs[layer.bypass_conv.name] = (prev,)
                added = (layer.bypass_conv.name,)
            inputs[layer.name] = (layer.expand1x1.name, layer.expand3x3.name) + added
            prev = layer.name
        elif isinstance(layer, S.GlobalAvgPool):
            inputs[layer.name] = (prev,)
            inputs["logits"] = (layer.name,)
            prev = "logits"
    return inputs


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


def compare_against(first: dict, second: dict, dtype, inputs: dict) -> dict:
    """One implementation's activations on two weight files (the same input, ``dtype``):
    ``{"layers": {name: metrics}, "first_divergent": name or None, "why": str or None,
    "threshold": t}``.  Each layer's metrics (``second`` against ``first``) add
    ``identical`` (the two runs' outputs are equal, NaNs equal to NaNs) and
    ``inputs_identical`` (every layer ``inputs[name]`` names is identical; ``"input"``, the
    network's input, always is).  The first divergent layer is the first, in ``first``'s
    order, whose inputs are identical and whose output is not (the arithmetic was the same,
    so the weights it reads differ), or whose ``max_rel`` exceeds :func:`threshold` (more
    than rounding of an earlier difference); a name ``second`` lacks is divergent."""
    limit = threshold(dtype)
    identical = {"input": True}
    layers: dict = {}
    first_divergent, why = None, None
    for name, a in first.items():
        if name not in second:
            layers[name] = {"missing": True}
            identical[name] = False
            if first_divergent is None:
                first_divergent, why = name, "missing from the second run"
            continue
        m = layer_metrics(a, second[name])
        m["identical"] = "shape" not in m and bool(np.array_equal(a, second[name],
                                                                   equal_nan=True))
        m["inputs_identical"] = all(identical.get(i, False) for i in inputs.get(name, ("?",)))
        identical[name] = m["identical"]
        layers[name] = m
        if first_divergent is not None:
            continue
        if "shape" in m:
            first_divergent, why = name, f"shape {m['shape']}"
        elif m["inputs_identical"] and not m["identical"]:
            first_divergent = name
            why = (f"its inputs are identical in both runs, its output moved by max_rel "
                   f"{m['max_rel']:.1e} (max_abs {m['max_abs']:.1e})")
        elif not m["max_rel"] <= limit:
            first_divergent = name
            why = (f"max_rel {m['max_rel']:.1e} > threshold {limit:.1e}, more than rounding "
                   f"of an earlier difference")
    return {"layers": layers, "first_divergent": first_divergent, "why": why,
            "threshold": limit}
