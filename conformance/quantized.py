"""int8 against float, layer by layer: pure NumPy (no runtime), the judge of
``tools/int8`` and ``conformance/test_int8.py``.

An engine's quantized model is described by :class:`QuantizedRun`, everything in canonical
layouts:

``codes``    ``{activation name: int8 codes}``, NCHW (``[N, C]`` for ``pool10``/``logits``),
             the names of :meth:`ports.spec.Variant.activation_names` plus ``"input"`` (the
             model's quantized input);
``params``   ``{the same names: (scale, zero_point)}``, per tensor (floats, ints);
``convs``    ``{conv name: (weight [O, I, k, k], bias [O])}``, float64, the model's own
             weights and biases dequantized (per-channel scales applied).

Two comparisons, each per activation:

:func:`against_float`  the dequantized activation ``(q - zp) * scale`` beside the same
                       runtime's float32 activation on the same input: ``cosine``,
                       ``snr_db`` (``10 log10(sum f^2 / sum (d - f)^2)``), ``max_abs`` and
                       ``max_steps`` (``max_abs / scale``).  Quantization error accumulates
                       along the network, so these are judged against measured minimums
                       (``[int8]`` of ``tolerances.toml``), not against one step.
:func:`local`          each layer recomputed in float64 from **the int8 model's own** inputs
                       (its dequantized input activations, dequantized weights and bias), then
                       quantized with the layer's own scale and zero point: the runtime's
                       codes must equal these within :func:`step_bound` steps.  With the
                       inputs identical, only the requantization differs: the exact value
                       falls between two codes and a runtime may round it to either (half
                       away from zero or to even; through a float32 or a 31-bit fixed-point
                       multiplier), which is one step, plus that multiplier's own relative
                       error (2^-23 of a value at most 255 steps from the zero point).  Any
                       other difference (a wrong scale, a wrong weight, a lost element) is
                       beyond it.

NaN is always a failure: a non-finite value in a dequantized activation, a logit or a
reference fails its layer or its image, named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

QMIN, QMAX = -128, 127
# The requantization multiplier's relative error (float32: 2^-24 per rounding, two roundings)
# times the largest value a code can stand for, in steps (255 steps from the zero point).
MULTIPLIER_STEPS = 2.0 ** -23 * (QMAX - QMIN)


def step_bound() -> float:
    """Largest honest ``|runtime code - recomputed code|`` of :func:`local`, in steps: one
    step (a value on the boundary between two codes may be rounded to either) plus the
    requantization multiplier's error, :data:`MULTIPLIER_STEPS` (3.0e-5)."""
    return 1.0 + MULTIPLIER_STEPS


@dataclass
class QuantizedRun:
    """One quantized model's int8 activations on one batch (see the module docstring)."""

    codes: dict[str, np.ndarray]
    params: dict[str, tuple[float, int]]
    convs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    qrange: tuple[int, int] = (QMIN, QMAX)  # the codes' range: int8, or (0, 255) for uint8

    def dequantized(self, name: str) -> np.ndarray:
        """``(codes - zero_point) * scale`` of activation ``name``, float64."""
        scale, zp = self.params[name]
        return (np.asarray(self.codes[name], dtype=np.float64) - zp) * scale


def quantize(x: np.ndarray, scale: float, zero_point: int,
             qrange: tuple[int, int] = (QMIN, QMAX)) -> np.ndarray:
    """Float ``x`` -> codes ``clip(round(x / scale) + zero_point, *qrange)`` (round half to
    even; int8 by default), as float64 integers; NaN stays NaN."""
    q = np.rint(np.asarray(x, dtype=np.float64) / scale) + zero_point
    return np.clip(q, *qrange)


# --- against the same runtime's float32 -----------------------------------------------------
def metrics(reference: np.ndarray, actual: np.ndarray, step: float) -> dict:
    """``{cosine, snr_db, max_abs, max_steps, nonfinite}`` of ``actual`` (dequantized int8)
    against ``reference`` (float32 of the same runtime), float64 arithmetic; a shape mismatch
    gives ``{"shape": ...}`` with failing values."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        return {"cosine": math.nan, "snr_db": -math.inf, "max_abs": math.inf,
                "max_steps": math.inf, "nonfinite": 0,
                "shape": f"{list(act.shape)}, expected {list(ref.shape)}"}
    nonfinite = int((~np.isfinite(act)).sum() + (~np.isfinite(ref)).sum())
    if nonfinite:
        return {"cosine": math.nan, "snr_db": math.nan, "max_abs": math.nan,
                "max_steps": math.nan, "nonfinite": nonfinite}
    from .trace import layer_metrics  # the layer trace's cosine, SNR and max abs

    m = layer_metrics(ref, act)
    return {"cosine": m["cosine"], "snr_db": m["snr_db"], "max_abs": m["max_abs"],
            "max_steps": m["max_abs"] / step, "nonfinite": 0}


def against_float(run: QuantizedRun, floats: dict[str, np.ndarray],
                  names: list[str]) -> dict[str, dict]:
    """:func:`metrics` per activation of ``names`` (network order): ``run``'s dequantized
    codes against ``floats`` (the same runtime's float32 activations, same input, NCHW)."""
    out = {}
    for name in names:
        if name not in run.codes or name not in floats:
            out[name] = {"missing": "int8" if name not in run.codes else "float32"}
            continue
        out[name] = metrics(floats[name], run.dequantized(name), run.params[name][0])
    return out


# --- each layer from the int8 model's own inputs --------------------------------------------
def _conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, padding: int):
    from ports.numpy.network import conv2d

    return conv2d(x, w, b, stride, padding)


def _max_pool(x: np.ndarray, pool) -> np.ndarray:
    from ports.numpy.network import max_pool_ceil

    return max_pool_ceil(x, pool)


def recompute(variant, run: QuantizedRun, upto: str | None = None) -> dict[str, np.ndarray]:
    """``{activation: float64 codes}``: each layer of ``variant`` computed from ``run``'s own
    dequantized inputs (``ports.spec`` order and hyper-parameters; weights from ``run.convs``)
    and quantized with the layer's own scale and zero point.  Shapes as ``run.codes``.
    ``upto``: stop once that activation is computed (the layers after it are left out)."""
    from ports import spec as S

    deq = run.dequantized
    out: dict[str, np.ndarray] = {}

    def requantize(name: str, value: np.ndarray) -> None:
        out[name] = quantize(value, *run.params[name], run.qrange)

    def conv(c, src: str, relu: bool) -> None:
        if c.name not in run.convs:
            raise KeyError(f"int8 model: no weights for convolution {c.name!r}")
        w, b = run.convs[c.name]
        y = _conv2d(deq(src), w, b, c.stride, c.padding)
        requantize(c.name, np.maximum(y, 0) if relu else y)

    prev, last_conv = "input", None
    for layer in variant.layers():
        if upto is not None and upto in out:
            break
        if isinstance(layer, S.Conv):
            last_conv = (layer, prev)
        elif isinstance(layer, S.ReLU):
            conv(last_conv[0], last_conv[1], relu=True)
            prev = layer.of
        elif isinstance(layer, S.MaxPool):
            requantize(layer.name, _max_pool(deq(prev), layer))
            prev = layer.name
        elif isinstance(layer, S.Fire):
            conv(layer.squeeze, prev, relu=True)
            for c in (layer.expand1x1, layer.expand3x3):
                if upto not in out:
                    conv(c, layer.squeeze.name, relu=True)
            if upto in out:
                break
            total = np.concatenate([deq(layer.expand1x1.name), deq(layer.expand3x3.name)], 1)
            if layer.bypass == "identity":
                total = total + deq(prev)
            elif layer.bypass == "conv":
                conv(layer.bypass_conv, prev, relu=False)
                if upto in out:
                    break
                total = total + deq(layer.bypass_conv.name)
            requantize(layer.name, total)
            prev = layer.name
        elif isinstance(layer, S.GlobalAvgPool):
            requantize(layer.name, deq(prev).mean(axis=(2, 3)))
            if upto in out:
                break
            requantize("logits", deq(layer.name))
            prev = "logits"
    return out


def local(variant, run: QuantizedRun, names: list[str],
          upto: str | None = None) -> dict[str, dict]:
    """Per activation of ``names``: ``{max_codes, mismatched, nonfinite}``: the largest
    ``|runtime code - recomputed code|`` (:func:`recompute`, steps), the fraction of elements
    that differ at all, and the count of non-finite values, the runtime's or the recomputed
    ones (a NaN in a layer's inputs makes its recomputed codes NaN: infinitely far).
    ``upto``: only the layers up to that one (see :func:`recompute`), the others left out.
    ``run.codes`` may hold dequantization defects (non-integer or non-finite values): they
    are compared as they are."""
    expected = recompute(variant, run, upto)
    if upto is not None:
        names = names[:names.index(upto) + 1]
    out = {}
    for name in names:
        if name not in run.codes or name not in expected:
            out[name] = {"missing": True}
            continue
        got = np.asarray(run.codes[name], dtype=np.float64)
        want = expected[name]
        if got.shape != want.shape:
            out[name] = {"shape": f"{list(got.shape)}, expected {list(want.shape)}"}
            continue
        nonfinite = int((~np.isfinite(got)).sum() + (~np.isfinite(want)).sum())
        diff = np.abs(got - want)
        out[name] = {"max_codes": math.inf if nonfinite else float(diff.max()),
                     "mismatched": float((diff != 0).mean()), "nonfinite": nonfinite}
    return out


# --- logits against the float64 reference ---------------------------------------------------
def agreement(reference: np.ndarray, logits: np.ndarray) -> dict:
    """``reference`` (float64 NumPy logits ``[N, classes]``) beside ``logits`` (dequantized
    int8): ``top1`` (fraction of images with the same top class), ``top5`` (mean overlap of
    the two top-5 sets, order ignored), ``max_abs`` and ``max_rel`` (each image's largest
    error over its reference's largest logit, the worst image), ``nonfinite`` (images with a
    non-finite logit: they count as disagreeing), ``per_image`` top-1 pairs."""
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(logits, dtype=np.float64)
    if ref.shape != act.shape or ref.ndim != 2:
        raise ValueError(f"logits: shape {list(act.shape)}, expected {list(ref.shape)} "
                         f"[N, classes]")
    finite = np.isfinite(act).all(axis=1) & np.isfinite(ref).all(axis=1)
    top1 = [(int(r.argmax()), int(a.argmax()) if f else -1)
            for r, a, f in zip(ref, act, finite)]
    overlap = [len(set(np.argsort(-r)[:5]) & set(np.argsort(-a)[:5])) / 5 if f else 0.0
               for r, a, f in zip(ref, act, finite)]
    err = np.where(finite[:, None], np.abs(act - ref), np.inf)
    scale = np.abs(ref).max(axis=1)
    return {"top1": float(np.mean([f and r == a for (r, a), f in zip(top1, finite)])),
            "top5": float(np.mean(overlap)), "max_abs": float(err.max()),
            "max_rel": float((err.max(axis=1) / scale).max()),
            "nonfinite": int((~finite).sum()), "per_image": top1}


# --- the verdict ----------------------------------------------------------------------------
def verdict(report: dict, bounds: dict) -> list[str]:
    """Every reason ``report`` fails ``bounds`` (``[int8]`` of tolerances.toml: ``min_top1``,
    ``min_top5``, ``min_cosine``, ``min_snr_db``); empty when it passes.  ``report``:
    ``{"agreement": agreement(...), "float": against_float(...), "local": local(...)}``,
    each message naming the layer or the images."""
    problems = []
    a = report["agreement"]
    if a["nonfinite"]:
        problems.append(f"logits: {a['nonfinite']} image(s) with a non-finite logit")
    if not a["top1"] >= bounds["min_top1"]:
        wrong = [i for i, (r, q) in enumerate(a["per_image"]) if r != q]
        problems.append(f"logits: top-1 agreement {a['top1']:.3f} < {bounds['min_top1']} "
                        f"(images {wrong} differ from the float64 reference)")
    if not a["top5"] >= bounds["min_top5"]:
        problems.append(f"logits: top-5 agreement {a['top5']:.3f} < {bounds['min_top5']}")
    for name, m in report["float"].items():
        if "missing" in m or "shape" in m:
            problems.append(f"{name}: {m.get('shape') or 'missing in ' + m['missing']}")
        elif m["nonfinite"]:
            problems.append(f"{name}: {m['nonfinite']} non-finite value(s) against float32")
        else:
            if not m["cosine"] >= bounds["min_cosine"]:
                problems.append(f"{name}: cosine {m['cosine']:.5f} < {bounds['min_cosine']}")
            if not m["snr_db"] >= bounds["min_snr_db"]:
                problems.append(f"{name}: SNR {m['snr_db']:.1f} dB < {bounds['min_snr_db']}")
    limit = step_bound()
    for name, m in report["local"].items():
        if "missing" in m or "shape" in m:
            problems.append(f"{name}: recomputed layer {m.get('shape') or 'missing'}")
        elif m["nonfinite"]:
            problems.append(f"{name}: {m['nonfinite']} non-finite value(s) in its int8 codes "
                            f"or recomputed from its int8 inputs")
        elif not m["max_codes"] <= limit:
            problems.append(f"{name}: {m['max_codes']:.2f} steps from the layer recomputed "
                            f"from its own int8 inputs (bound {limit:.5f})")
    return problems
