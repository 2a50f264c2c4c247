"""Training parity cases: gradients and optimizer steps against the float64 NumPy reference.

Every variant at :data:`SIZE` x :data:`SIZE`, a batch of :data:`BATCH` seeded conformance
images with the fixed :data:`LABELS`, the seeded weights:

``grad``   ``loss_and_grads``: the loss and every parameter's gradient;
``steps``  ``train_steps`` with Caffe's solver rule (``momentum`` 0.9, ``weight_decay`` 2e-4
           on weights and biases) for :data:`STEPS` steps of Caffe's ``poly`` schedule
           (:func:`poly_lrs`): the loss before each step and the weights after the last.
           The rate changes every step, so PyTorch's momentum convention (the rate outside
           the velocity) gives other steps than Caffe's.

The reference is :mod:`ports.numpy.train`, computed on the fly (it is deterministic float64
NumPy); what pins it is data: ``conformance/golden/train/<variant>.npz`` holds its losses,
per-tensor norms and a fixed sample of entries of every gradient and every weight change,
regenerated only by ``python -m conformance.golden --regenerate`` and checked by the core
tests (full float64 arrays for 12 variants would be ~140 MB).

Errors are relative to each tensor's largest magnitude (``max |port - ref| / max |ref|``):
gradients against the reference gradient, weights through their change over the steps
(``w5 - w0``), whose scale is the learning rate's, not the weights'.  Bounds live in
``tolerances.toml`` (``[train.DTYPE]``).

ReLU and max pool have kinks, and where the reference finds an input within float32
rounding of one (``kink`` in ``[train.float32]``, relative to that layer's largest value) a
float32 port may compute the gradient on its other side.  The reference also computes each
of those few decisions flipped (:mod:`ports.numpy.kinks`); a float32 comparison grants each
entry the sum of what the flips change there, on top of the bound, and reports both the
error beyond that slack (``max_rel``) and without it (``raw_rel``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from ports.seeded import seeded_weights
from ports.spec import Variant, all_variants

from .harness import RESULTS, tolerances_table, worst
from .inputs import inputs

SIZE = 40  # the last stage is still 2x2, so every tap of every 3x3 kernel gets a gradient
BATCH = 4
LABELS = (0, 285, 967, 999)
STEPS = 5
MOMENTUM = 0.9
WEIGHT_DECAY = 2e-4
# Caffe's poly policy, lr = base_lr * (1 - iter / max_iter) ** power, with the released
# solver's power 0.5; max_iter is scaled down so that the rate falls by a quarter over five
# steps, and base_lr so that those steps descend smoothly from seeded weights (at 1e-2 the
# loss jumps up and down, and float32 rounding is amplified into 1e-2 weight errors).
BASE_LR, POWER, MAX_ITER = 1e-3, 0.5, 10
SAMPLE = 16  # entries per tensor kept in the stored golden
# Real-weights gradient cases: fixture -> the true class of each of its images (chelsea is
# an Egyptian cat, 285; coffee an espresso, 967).
FIXTURE_LABELS = {"caffe-real-v1_0": (285, 967)}


def poly_lrs(base_lr: float = BASE_LR, power: float = POWER, max_iter: int = MAX_ITER,
             steps: int = STEPS) -> list[float]:
    """Caffe's ``poly`` learning rates for iterations ``0 .. steps - 1``."""
    return [base_lr * (1.0 - it / max_iter) ** power for it in range(steps)]


def batch() -> tuple[np.ndarray, np.ndarray]:
    """(x [BATCH,3,SIZE,SIZE] float32, labels [BATCH] int64)."""
    return inputs(SIZE, count=BATCH), np.array(LABELS, dtype=np.int64)


@lru_cache(maxsize=2)
def reference(vid: str) -> dict:
    """The float64 reference of one variant: ``loss``, ``grad``, ``losses`` (before each
    step), ``start`` and ``end`` weights ({name: array}), and for float32 comparisons the
    kink slack (:mod:`ports.numpy.kinks`): ``slack-grad``, ``slack-end`` ({name: array}),
    ``slack-losses`` (per step) and ``fragile`` (how many decisions, for the gradient and
    over the steps).  Computed once per checkout (~15 s a variant) and
    kept in ``build/conformance/train-reference/`` under :func:`reference_digest`, for every
    port's environment to read (a stale or unreadable file is recomputed)."""
    from .results import file_lock

    weights = seeded_weights(Variant.from_id(vid))
    start = {k: v.astype(np.float64) for k, v in weights.tensors.items()}
    path = RESULTS / "train-reference" / f"{vid}.npz"
    arrays = ("grad", "end", "slack-grad", "slack-end")
    with file_lock(path.with_suffix(".lock")):  # port environments running side by side
        return _cached_reference(vid, weights, start, path, arrays)


def reference_digest() -> str:
    """Digest of what the reference depends on: ``ports/numpy/``, the spec, the seeded
    weights, input handling, this module, the inputs and the tolerance table (whose ``kink``
    sets the slack) -- not the other ports, so editing one keeps the cache."""
    import hashlib
    from pathlib import Path

    import ports

    from .results import _tree_digest

    pkg, here = Path(ports.__file__).resolve().parent, Path(__file__).resolve().parent
    h = hashlib.sha256(_tree_digest(pkg / "numpy").encode())
    for path in [pkg / f for f in ("spec.py", "seeded.py", "_predict.py", "canonical.py",
                                   "_api.py")] + \
            [here / f for f in ("training.py", "inputs.py", "harness.py", "tolerances.toml")]:
        h.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _cached_reference(vid, weights, start, path, arrays) -> dict:
    from ports import numpy as ref

    try:
        with np.load(path) as data:
            if str(data["code"]) == reference_digest():
                return {"loss": float(data["loss"]), "losses": list(data["losses"]),
                        "start": start, "fragile": data["fragile"].tolist(),
                        "slack-losses": [float(v) for v in data["slack_losses"]],
                        **{a: {k: data[f"{a}/{k}"] for k in start} for a in arrays}}
    except (OSError, KeyError, ValueError):
        pass
    from ports.numpy import kinks

    x, labels = batch()
    r = kinks.reference(ref.load(weights), x.astype(np.float64), labels, poly_lrs(), MOMENTUM,
                        WEIGHT_DECAY, tolerance("float32")["kink"])
    loss, losses, slack_losses = r.loss, r.losses, r.slack_losses
    out = {"loss": loss, "losses": losses, "start": start, "fragile": list(r.fragile),
           "slack-losses": [float(v) for v in slack_losses],
           "grad": r.grads, "end": r.end, "slack-grad": r.slack_grad, "slack-end": r.slack_end}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{vid}.{os.getpid()}.part.npz")
    np.savez(tmp, code=np.array(reference_digest()), loss=np.array(loss),
             losses=np.array(losses),
             fragile=np.array(out["fragile"]), slack_losses=slack_losses,
             **{f"{a}/{k}": v for a in arrays for k, v in out[a].items()})
    os.replace(tmp, path)
    return out


@lru_cache(maxsize=1)
def fixture_reference(name: str) -> dict:
    """``{"x", "labels", "weights", "loss", "grads"}`` of a real-weights gradient case: the
    fixture's weights and inputs (real Caffe's input for the photos) with the true classes
    (:data:`FIXTURE_LABELS`), the float64 reference gradients."""
    from ports import numpy as ref

    from .fixtures import FIXTURES

    fx = next(f for f in FIXTURES if f.name == name)
    weights, x = fx.weights(), fx.inputs()
    labels = np.array(FIXTURE_LABELS[name], dtype=np.int64)
    loss, grads = ref.loss_and_grads(ref.load(weights), x, labels)
    return {"x": x, "labels": labels, "weights": weights, "loss": loss, "grad": grads,
            "fragile": [0, 0]}


def relative_errors(actual: dict, expected: dict,
                    slack: dict | None = None) -> dict[str, float]:
    """``max (|actual - expected| - slack) / max |expected|`` per tensor (0 where both are
    0; ``slack`` per entry, none by default); NaN for a tensor holding a NaN, inf for one
    holding an infinity (see :func:`nonfinite`)."""
    out = {}
    for name, e in expected.items():
        e = np.asarray(e, np.float64)
        a = np.asarray(actual[name], np.float64)
        if a.shape != e.shape:
            raise AssertionError(f"{name}: shape {a.shape}, expected {e.shape}")
        scale = float(np.abs(e).max())
        excess = np.abs(a - e) - (slack[name] if slack else 0.0)
        diff = float(excess.max())
        if np.isnan(diff):
            out[name] = float("nan")
            continue
        diff = max(diff, 0.0)
        out[name] = diff / scale if scale else (0.0 if diff == 0 else float("inf"))
    return out


def nonfinite(tensors: dict) -> list[str]:
    """Names of the tensors in ``tensors`` (name -> array or number) holding a NaN or an
    infinity, each with how many: ``["fire5.squeeze.weight (3 of 2304)", ...]``."""
    out = []
    for name, t in tensors.items():
        bad = int((~np.isfinite(np.asarray(t, np.float64))).sum())
        if bad:
            out.append(f"{name} ({bad} of {np.size(t)})")
    return out


def _errors(actual: dict, expected: dict, slack: dict, dtype: str) -> dict:
    """worst tensor (:func:`conformance.harness.worst`: NaN is the worst), its error beyond
    the kink slack (float32 only) and without it, and the tensors that are not finite."""
    raw = relative_errors(actual, expected)
    errs = relative_errors(actual, expected, slack) if "kink" in tolerance(dtype) else raw
    name, error = worst(errs)
    return {"max_rel": error, "worst_tensor": name, "raw_rel": worst(raw)[1],
            "nonfinite": nonfinite({k: actual[k] for k in expected})}


def tolerance(dtype: str, fixture: str | None = None,
              port: str | None = None) -> dict[str, float]:
    """``{"grad", "weights", "loss"}`` bounds (and ``kink`` where the dtype has one) for
    ``dtype`` from ``tolerances.toml`` (``[train.DTYPE]``, overridden by
    ``[train.fixture.NAME.DTYPE]`` for a fixture and ``[train.port.PORT.DTYPE]`` for a
    port whose framework cannot express the rule exactly)."""
    table = tolerances_table()["train"]
    bounds = dict(table[dtype])
    if fixture:
        bounds.update(table.get("fixture", {}).get(fixture, {}).get(dtype, {}))
    if port:
        bounds.update(table.get("port", {}).get(port, {}).get(dtype, {}))
    return {k: float(v) for k, v in bounds.items()}


def compare_grad(port_loss: float, port_grads: dict, vid: str, dtype: str,
                 port: str | None = None) -> dict:
    """A result record for a ``grad`` case (``vid``: a variant id or a fixture name)."""
    fixture = vid in FIXTURE_LABELS
    r = fixture_reference(vid) if fixture else reference(vid)
    e = _errors(port_grads, r["grad"], {} if fixture else r["slack-grad"], dtype)
    tol = tolerance(dtype, vid if fixture else None, port)
    loss_err = float(abs(port_loss - r["loss"]) / abs(r["loss"]))
    e["nonfinite"] += nonfinite({"loss": port_loss})
    return {**e, "fragile": r["fragile"][0], "loss": float(port_loss), "loss_rel": loss_err,
            "bound": tol["grad"],
            "ok": bool(not e["nonfinite"] and e["max_rel"] <= tol["grad"]
                       and loss_err <= tol["loss"])}


def compare_steps(port_losses: list, port_end: dict, vid: str, dtype: str,
                  port: str | None = None) -> dict:
    """A result record for a ``steps`` case (weights compared through their change)."""
    r = reference(vid)
    change = {k: np.asarray(port_end[k], np.float64) - r["start"][k] for k in r["end"]}
    expected = {k: r["end"][k] - r["start"][k] for k in r["end"]}
    e = _errors(change, expected, r["slack-end"], dtype)
    tol = tolerance(dtype, port=port)
    slack = r["slack-losses"] if "kink" in tolerance(dtype) else [0.0] * STEPS
    loss_errs = {f"loss {i}": (float("nan") if np.isnan(a) else max(abs(a - b) - s, 0.0))
                 / abs(b) for i, (a, b, s) in enumerate(zip(port_losses, r["losses"], slack), 1)}
    loss_rel = worst(loss_errs)[1]
    e["nonfinite"] += nonfinite({f"loss {i}": v for i, v in enumerate(port_losses, 1)})
    return {**e, "fragile": r["fragile"][1], "losses": [float(v) for v in port_losses],
            "loss_rel": float(loss_rel), "bound": tol["weights"],
            "ok": bool(len(port_losses) == STEPS and not e["nonfinite"]
                       and e["max_rel"] <= tol["weights"] and loss_rel <= tol["loss"])}


def golden_summary(vid: str) -> dict[str, np.ndarray]:
    """What ``conformance/golden/train/<vid>.npz`` stores: the losses, per-tensor L2 norms
    of the gradients and of the weight changes, and :data:`SAMPLE` entries of each at fixed
    positions (a seeded draw per tensor)."""
    r = reference(vid)
    out = {"loss": np.array(r["loss"]), "losses": np.array(r["losses"])}
    for name, g in r["grad"].items():
        change = r["end"][name] - r["start"][name]
        idx = np.random.default_rng(_name_seed(name)).choice(g.size, min(SAMPLE, g.size),
                                                             replace=False)
        out[f"grad/{name}/norm"] = np.array(np.linalg.norm(g))
        out[f"grad/{name}/sample"] = g.reshape(-1)[idx]
        out[f"change/{name}/norm"] = np.array(np.linalg.norm(change))
        out[f"change/{name}/sample"] = change.reshape(-1)[idx]
    return out


def _name_seed(name: str) -> int:
    """A seed from a tensor name, the same on every platform and Python."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def main(argv=None) -> int:
    """``python -m conformance.training``: compute (or check) the cached reference of every
    variant, e.g. ahead of the ports that read it (the matrix does)."""
    import time

    variants = [v.id for v in all_variants()]
    for i, vid in enumerate(variants, 1):
        start = time.monotonic()
        reference(vid)
        print(f"[{i}/{len(variants)}] {vid}: {time.monotonic() - start:.1f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
