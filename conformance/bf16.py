"""What an honest bfloat16 evaluation of SqueezeNet computes, emulated in NumPy: the yardstick
the bfloat16 bounds of ``tolerances.toml`` are derived from (``python -m conformance.bf16``
prints the measurement).

bfloat16 keeps 8 significant bits (float32's exponent, 7 stored fraction bits): machine
epsilon ``2^-7``, unit roundoff ``u = 2^-8 = 3.9e-3``.  A framework computing a layer in
bfloat16 stores its input, its weights and its output in bfloat16 and accumulates the
products of a convolution in float32 (oneDNN, XLA and Eigen all do).  :func:`activations`
is the float64 reference (``ports.numpy``) with exactly those roundings: the input, every
weight and bias, every convolution's output (before its ReLU, which rounding commutes with),
every bypass sum and the global mean are rounded to the nearest bfloat16 (ties to even);
max pooling, ReLU and concatenation only move values, so they round nothing.

A port's bfloat16 error above this one's by more than the table's margin does more in
bfloat16 than storing (e.g. accumulates a 3x3x64 dot product or the 169-cell global mean in
bfloat16), or has a porting mistake.
"""

from __future__ import annotations

import numpy as np

from ports._api import BFLOAT16_EPS

EPS = BFLOAT16_EPS  # bfloat16 machine epsilon
U = EPS / 2       # unit roundoff


def round_to_bfloat16(a) -> np.ndarray:
    """``a`` rounded to the nearest bfloat16 (ties to even), returned as float64; NaN and
    infinities pass through.  Via float32, whose upper 16 bits are the bfloat16."""
    a32 = np.asarray(a, dtype=np.float32)
    bits = a32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    out = rounded.view(np.float32).astype(np.float64)
    return np.where(np.isfinite(a32), out, a32.astype(np.float64))


def _rounded(name: str, a: np.ndarray) -> np.ndarray:
    """The reference forward's ``record``: round what a bfloat16 port stores (module doc)."""
    fire_output = name.startswith("fire") and "." not in name
    if name.endswith(":z") or name.endswith(".bypass") or fire_output or name == "pool10":
        return round_to_bfloat16(a)
    return a


def activations(weights, x: np.ndarray, change=None) -> dict[str, np.ndarray]:
    """``{activation name: float64 array}`` of the honest bfloat16 evaluation of ``weights``
    (canonical :class:`~ports.formats.canonical.Weights`) on NCHW ``x``, network order;
    ``change(name, array) -> array``, where given, alters each value as it is computed (a
    planted defect flows on into later layers, as a port's own would)."""
    from ports import numpy as ref
    from ports.numpy import network

    model = ref.load(weights)
    model.params = {k: round_to_bfloat16(v) for k, v in model.params.items()}
    names = weights.variant.activation_names()
    out: dict[str, np.ndarray] = {}

    def record(name: str, a: np.ndarray) -> np.ndarray:
        a = _rounded(name, a)
        if change is not None:
            a = change(name, a)
        if name in names:
            out[name] = a
        return a

    network.forward(model, round_to_bfloat16(x), record)
    return out


def logit_error(logits: np.ndarray, expected: np.ndarray) -> float:
    """max |logits - expected| over the case, in units of ``max |expected|``."""
    return float(np.abs(np.asarray(logits, np.float64) - expected).max()
                 / np.abs(expected).max())


def main() -> int:
    """Measure the emulation over every golden case: the worst logit error (in ``u`` of the
    case's largest |logit|), top-1 agreement and the worst layer of the trace."""
    from ports import numpy as ref
    from ports.seeded import seeded_weights
    from ports.spec import Variant

    from . import golden
    from .inputs import SIZES, inputs
    from .trace import compare

    worst_logit, worst_layer, top1, images = 0.0, ("", 0.0), 0, 0
    for vid in golden.VARIANTS:
        weights = seeded_weights(Variant.from_id(vid))
        for size in SIZES:
            x = inputs(size)
            acts = activations(weights, x)
            expected = golden.load(vid, size)
            err = logit_error(acts["logits"], expected) / U
            top1 += int((acts["logits"].argmax(1) == expected.argmax(1)).sum())
            images += len(x)
            layers = compare(ref.activations(ref.load(weights), x), acts, "float64")["layers"]
            name, rel = max(((k, v["max_rel"]) for k, v in layers.items()), key=lambda t: t[1])
            print(f"{vid}@{size}: logits {err:.2f} u of max |logit|; worst layer {name} "
                  f"{rel / U:.2f} u", flush=True)
            worst_logit = max(worst_logit, err)
            worst_layer = max(worst_layer, (name, rel / U), key=lambda t: t[1])
    print(f"worst logit error {worst_logit:.2f} u; worst layer {worst_layer[0]} "
          f"{worst_layer[1]:.2f} u; top-1 {top1} / {images}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
