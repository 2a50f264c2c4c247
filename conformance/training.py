"""Training parity cases: gradients and optimizer steps against the float64 NumPy reference.

Every variant at :data:`SIZE` x :data:`SIZE`, a batch of :data:`BATCH` seeded conformance
images with the fixed :data:`LABELS`, the seeded weights:

``grad``   ``loss_and_grads``: the loss and every parameter's gradient (also on the real
           Deep Compression weights, :data:`FIXTURE_LABELS`);
``steps``  ``train_steps`` with Caffe's solver rule (``momentum`` 0.9, ``weight_decay`` 2e-4
           on weights and biases) for :data:`STEPS` steps of Caffe's ``poly`` schedule
           (:func:`poly_lrs`), which returns every step (:class:`ports._api.Step`).  The rate
           changes every step, so PyTorch's momentum convention (the rate outside the
           velocity) gives other steps than Caffe's.

Two checks, both local, so that float32 rounding cannot add up into slack:

* **the gradient of the port's own linear piece**: ReLU and max pool make the loss piecewise
  smooth, and near a kink float32 rounding may land on the other side of the float64
  reference (both gradients are right).  So the reference is run backward with the port's
  own decisions (:func:`ports.numpy.train.decisions_of` on the port's ``activations`` at the
  same weights): what is left is rounding, and every tensor's gradient must be within
  ``grad`` of its largest entry (``max |g_port - g_ref| / max |g_ref|``), the loss within
  ``loss`` of the reference's at the same weights.  A port's activations and its training
  pass are two computations (JAX compiles them apart), so a decision within ``kink`` of its
  kink may differ between them: :func:`resolve` finds those from the gradient, layer by
  layer, and the record names them (``tipped``);
* **the optimizer as exact arithmetic on the port's own numbers**: at every step, from the
  port's gradient ``g``, its previous velocity ``v`` and weights ``w``, Caffe's rule gives
  ``v' = m v + lr (g + wd w)`` and ``w' = w - v'``; each entry of the port's velocity and
  weights must be within ``optimizer`` (a few units of rounding) of those, relative to the
  sum of the magnitudes that went into it.  Every convention mistake (decoupled decay, no
  decay on biases, PyTorch's momentum rule, Nesterov) moves this by ``wd |w| / |g|`` or
  more, far above rounding.

A steps case checks the gradient and the loss at every step, at the weights the port had
then.  Bounds live in ``tolerances.toml`` (``[train.DTYPE]``); non-finite values fail.

``conformance/golden/train/<variant>.npz`` pins the reference itself: its losses, per-tensor
norms and a fixed sample of entries of every gradient and weight change over the steps
from the seeded weights (:func:`golden_summary`), regenerated only by ``python -m
conformance.golden --regenerate`` and checked by the core tests.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ports.formats.canonical import Weights
from ports.seeded import seeded_weights
from ports.spec import MaxPool, Variant

from .harness import tolerances_table, worst
from .inputs import inputs

SIZE = 40  # the last stage is still 2x2, so every tap of every 3x3 kernel gets a gradient
BATCH = 4
LABELS = (0, 285, 967, 999)
STEPS = 5
MOMENTUM = 0.9
WEIGHT_DECAY = 2e-4
# Caffe's poly policy, lr = base_lr * (1 - iter / max_iter) ** power, with the released
# solver's power 0.5; max_iter is scaled down so that the rate falls by a quarter over five
# steps, and base_lr so that those steps descend smoothly from seeded weights.
BASE_LR, POWER, MAX_ITER = 1e-3, 0.5, 10
SAMPLE = 16  # entries per tensor kept in the stored golden
MAX_FLIPS = 64  # decisions near a kink tried the other way, at most, per gradient
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


def case_data(name: str) -> tuple[Weights, np.ndarray, np.ndarray]:
    """(weights, x [N,3,H,W], labels [N]) of a training case: a variant id (the seeded
    weights and :func:`batch`) or a fixture of :data:`FIXTURE_LABELS` (its real weights,
    real Caffe's input for its photos, their true classes)."""
    if name in FIXTURE_LABELS:
        from .fixtures import FIXTURES

        fx = next(f for f in FIXTURES if f.name == name)
        return fx.weights(), fx.inputs(), np.array(FIXTURE_LABELS[name], dtype=np.int64)
    return (seeded_weights(Variant.from_id(name)), *batch())


@lru_cache(maxsize=2)
def reference(vid: str) -> dict:
    """The float64 reference's own trajectory from the seeded weights of ``vid`` (what the
    stored golden pins): ``loss`` and ``grad`` at the start, ``losses`` before each step,
    ``start`` and ``end`` weights (``{name: array}``).  About a second a variant."""
    from ports import numpy as ref
    from ports.numpy import train

    weights, x, labels = case_data(vid)
    start = {k: v.astype(np.float64) for k, v in weights.tensors.items()}
    steps = train.train_steps(ref.load(weights), x.astype(np.float64), labels, poly_lrs(),
                              MOMENTUM, WEIGHT_DECAY)
    return {"loss": steps[0].loss, "grad": steps[0].grad, "losses": [s.loss for s in steps],
            "start": start, "end": steps[-1].weights}


def decided(weights: Weights, tensors: dict, x: np.ndarray, labels: np.ndarray,
            acts: dict | None, flips=()) -> tuple[float, dict[str, np.ndarray]]:
    """The float64 reference's loss and gradients at ``tensors`` (``{name: array}``, the
    network of ``weights``), taking every ReLU and max-pool decision as the forward pass
    whose activations are ``acts`` took it (:func:`ports.numpy.train.decisions_of`; None:
    the reference's own decisions), the :class:`ports.numpy.train.Kink` s in ``flips`` the
    other way."""
    from ports.numpy import train

    model = _model(weights, tensors)
    return train.loss_and_grads(model, np.asarray(x, np.float64), labels,
                                train.decisions_of(model.variant, acts, flips))


def _model(weights: Weights, tensors: dict):
    from ports import numpy as ref

    model = ref.load(weights)
    model.params.update({k: np.asarray(v, np.float64) for k, v in tensors.items()})
    return model


def resolve(weights: Weights, tensors: dict, x, labels, acts, grads: dict,
            bound: float, margin: float) -> tuple[float, dict, list]:
    """The float64 gradient a port's ``grads`` are compared with: :func:`decided` through the
    reference's own decisions when that is within a quarter of ``bound`` (most cases: the
    port took the same ones, and what is left is rounding), else through the port's own
    (``acts``: its activations, or a function computing them, called only then; None:
    none) or the reference's when either is within ``bound``, else with the decisions
    within ``margin`` of their kink (:func:`ports.numpy.train.kinks`) that the port's
    training pass took otherwise than its activations say found from its gradient (a
    port's activations and its training pass are two computations and may round
    differently: JAX compiles them apart).

    A decision changes the gradients of the layer it belongs to and of those before it,
    never of later ones; so while some tensor is beyond ``bound``, the decisions near a kink
    of the latest such tensor's layer are tried the other way (a pool's also split between
    its two maxima), closest first, and the first that brings that tensor closer is kept.
    Returns (loss, gradients, the decisions taken the other way).  A gradient that no choice
    of these few decisions explains stays beyond the bound (a NaN is not explained)."""
    from ports.numpy import train

    flips: list = []
    loss, ref_grads = decided(weights, tensors, x, labels, None)  # most often the same
    errors = relative_errors(grads, ref_grads)
    if not worst(errors)[1] > bound / 4:  # rounding (a tipped decision moves far more), or NaN
        return loss, ref_grads, flips
    acts = acts() if callable(acts) else acts  # computed only when needed
    if acts is not None:
        own = loss, ref_grads, errors
        loss, ref_grads = decided(weights, tensors, x, labels, acts)
        errors = relative_errors(grads, ref_grads)
        if not worst(errors)[1] > bound:
            return loss, ref_grads, flips
        if not worst(own[2])[1] > bound:
            return own[0], own[1], flips
    elif not worst(errors)[1] > bound:
        return loss, ref_grads, flips
    model = _model(weights, tensors)
    layers = _layers_of_decisions(model.variant)
    near = train.kinks(model, x, margin)
    order = list(model.variant.params())
    tried = 0
    while tried < MAX_FLIPS:
        beyond = [n for n in order if errors[n] > bound]
        if not beyond:
            break
        latest = beyond[-1]
        layer = latest.rsplit(".", 1)[0]
        best = None
        for kink in near:
            if kink in flips or layer not in layers[kink.site]:
                continue
            for way in [kink] + ([kink._replace(split=True)] if kink.pair else []):
                tried += 1
                trial_loss, trial = decided(weights, tensors, x, labels, acts, flips + [way])
                trial_errors = relative_errors(grads, trial)
                if trial_errors[latest] < (best or (0, 0, errors))[2][latest]:
                    best = (way, trial_loss, trial_errors, trial)
            if best or tried >= MAX_FLIPS:
                break
        if best is None:
            break  # no decision of that layer explains it
        flips.append(best[0])
        loss, errors, ref_grads = best[1], best[2], best[3]
    return loss, ref_grads, flips


def _layers_of_decisions(variant: Variant) -> dict[str, set]:
    """Decision site -> the convolutions whose gradients a decision there changes first: a
    ReLU's own conv; a pool's input convs (conv1, or the fire's expands and bypass)."""
    out = {c.name: {c.name} for c in variant.convs()}
    names = variant.activation_names()
    fires = {f.name: f for f in variant.fires()}
    for layer in variant.layers():
        if isinstance(layer, MaxPool):
            before = names[names.index(layer.name) - 1]
            convs = fires[before].convs()[1:] if before in fires else ()
            out[layer.name] = {c.name for c in convs} or {before}
    return out


def relative_errors(actual: dict, expected: dict) -> dict[str, float]:
    """``max |actual - expected| / max |expected|`` per tensor (0 where both are 0); NaN for
    a tensor holding a NaN, inf for one holding an infinity (see :func:`nonfinite`)."""
    out = {}
    for name, e in expected.items():
        e = np.asarray(e, np.float64)
        a = np.asarray(actual[name], np.float64)
        if a.shape != e.shape:
            raise AssertionError(f"{name}: shape {a.shape}, expected {e.shape}")
        scale = float(np.abs(e).max())
        diff = float(np.abs(a - e).max())
        if np.isnan(diff):
            out[name] = float("nan")
        else:
            out[name] = diff / scale if scale else (0.0 if diff == 0 else float("inf"))
    return out


def entry_errors(actual: np.ndarray, expected: np.ndarray, size: np.ndarray) -> float:
    """``max |actual - expected| / size`` over the entries (``size``: the magnitude of what
    went into each entry; 0 where an entry of size 0 is exact, inf where it is not, NaN
    where ``actual`` is NaN)."""
    diff = np.abs(np.asarray(actual, np.float64) - expected)
    if np.isnan(diff).any():
        return float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(diff == 0, 0.0, diff / size)
    return float(ratio.max()) if ratio.size else 0.0


def nonfinite(tensors: dict) -> list[str]:
    """Names of the tensors in ``tensors`` (name -> array or number) holding a NaN or an
    infinity, each with how many: ``["fire5.squeeze.weight (3 of 2304)", ...]``."""
    out = []
    for name, t in tensors.items():
        bad = int((~np.isfinite(np.asarray(t, np.float64))).sum())
        if bad:
            out.append(f"{name} ({bad} of {np.size(t)})")
    return out


def tolerance(dtype: str, fixture: str | None = None,
              port: str | None = None) -> dict[str, float]:
    """``{"grad", "loss", "optimizer"}`` bounds for ``dtype`` from ``tolerances.toml``
    (``[train.DTYPE]``, overridden by ``[train.fixture.NAME.DTYPE]`` for a fixture and
    ``[train.port.PORT.DTYPE]`` for a port whose framework cannot express the rule
    exactly)."""
    table = tolerances_table()["train"]
    bounds = dict(table[dtype])
    if fixture:
        bounds.update(table.get("fixture", {}).get(fixture, {}).get(dtype, {}))
    if port:
        bounds.update(table.get("port", {}).get(port, {}).get(dtype, {}))
    return {k: float(v) for k, v in bounds.items()}


def _gradient_check(weights: Weights, tensors: dict, x, labels, acts, loss, grads,
                    bounds: dict, where: str = "") -> dict:
    """The gradient and loss of a port at ``tensors`` against :func:`resolve`: the worst
    tensor (NaN worst), its relative error, the loss's, what is not finite, and which
    decisions near a kink its training pass took otherwise than its activations say."""
    ref_loss, ref_grads, flips = resolve(weights, tensors, x, labels, acts, grads,
                                         bounds["grad"], bounds["kink"])
    name, error = worst(relative_errors(grads, ref_grads))
    return {"max_rel": error, "worst_tensor": where + name,
            "loss_rel": float(abs(loss - ref_loss) / abs(ref_loss)),
            "tipped": [f"{where}{k.site}{list(k.index)}{' split' if k.split else ''}"
                       for k in flips],
            "nonfinite": nonfinite({where + k: grads[k] for k in ref_grads})
            + nonfinite({where + "loss": loss})}


def compare_grad(weights: Weights, x, labels, loss: float, grads: dict, acts,
                 dtype: str, bounds: dict) -> dict:
    """A result record for a ``grad`` case: a port's ``loss`` and ``grads`` at ``weights``
    on ``x`` and ``labels``, its activations there ``acts`` (see :func:`resolve`)."""
    tensors = {k: np.asarray(v, np.dtype(dtype)) for k, v in weights.tensors.items()}
    r = _gradient_check(weights, tensors, x, labels, acts, loss, grads, bounds)
    return {**r, "loss": float(loss), "bound": bounds["grad"],
            "ok": bool(not r["nonfinite"] and r["max_rel"] <= bounds["grad"]
                       and r["loss_rel"] <= bounds["loss"])}


def optimizer_errors(before: dict, velocity: dict, step, lr: float,
                     momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY
                     ) -> dict[str, float]:
    """Per tensor, how far one step of a port is from Caffe's rule applied to its own
    numbers, in units of what went into each entry: ``before`` (the weights ``w`` before
    the step), ``velocity`` (``v`` before it), ``step`` (:class:`ports._api.Step`: the
    gradient ``g`` it used, ``v'`` and ``w'`` after it):
    ``|v' - (m v + lr (g + wd w))| / (m |v| + lr (|g| + wd |w|))`` and
    ``|w' - (w - v')| / (|w| + |v'|)``, the worse of the two (named ``velocity`` or
    ``weights``)."""
    out = {}
    for name, w in before.items():
        w, v = np.asarray(w, np.float64), np.asarray(velocity[name], np.float64)
        g = np.asarray(step.grad[name], np.float64)
        v_new = np.asarray(step.velocity[name], np.float64)
        expect_v = momentum * v + lr * (g + weight_decay * w)
        size_v = momentum * np.abs(v) + lr * (np.abs(g) + weight_decay * np.abs(w))
        out[f"{name} velocity"] = entry_errors(v_new, expect_v, size_v)
        out[f"{name} weights"] = entry_errors(step.weights[name], w - v_new,
                                              np.abs(w) + np.abs(v_new))
    return out


def compare_steps(weights: Weights, x, labels, steps: list, acts: list, lrs, dtype: str,
                  bounds: dict) -> dict:
    """A result record for a ``steps`` case: a port's ``steps``
    (:class:`ports._api.Step`, one per rate of ``lrs``) from ``weights`` on ``x`` and
    ``labels``; ``acts[k]``: its activations at the weights before step ``k`` (see
    :func:`resolve`).  Every step's
    gradient and loss at the port's weights then (:func:`decided`) and its update
    (:func:`optimizer_errors`)."""
    steps = list(steps)
    if len(steps) != len(lrs) or not all(hasattr(s, "velocity") for s in steps):
        return {"max_rel": float("nan"), "worst_tensor": "", "loss_rel": float("nan"),
                "optimizer_rel": float("nan"), "worst_update": "", "losses": [],
                "nonfinite": [], "bound": bounds["grad"], "ok": False,
                "error": f"train_steps returned {len(steps)} steps for {len(lrs)} rates"
                         " (expected one ports._api.Step per rate)"}
    w = {k: np.asarray(v, np.dtype(dtype)) for k, v in weights.tensors.items()}
    v = {k: np.zeros_like(t) for k, t in w.items()}
    grads, losses, updates, bad, tipped = {}, {}, {}, [], []
    for k, (step, lr) in enumerate(zip(steps, lrs), 1):
        where = f"step {k} " if len(steps) > 1 else ""
        if bad:
            break  # after a non-finite step nothing is comparable
        r = _gradient_check(weights, w, x, labels, acts[k - 1], step.loss, step.grad, bounds,
                            where)
        grads[r["worst_tensor"]], losses[f"step {k}"] = r["max_rel"], r["loss_rel"]
        tipped += r["tipped"]
        bad += r["nonfinite"]
        bad += nonfinite({f"{where}{n} velocity": t for n, t in step.velocity.items()})
        bad += nonfinite({f"{where}{n} weights": t for n, t in step.weights.items()})
        updates.update({where + n: e for n, e in
                        optimizer_errors(w, v, step, lr).items()})
        w, v = step.weights, step.velocity
    name, error = worst(grads)
    update, update_error = worst(updates)
    loss_rel = worst(losses)[1]
    return {"max_rel": error, "worst_tensor": name, "loss_rel": loss_rel,
            "optimizer_rel": update_error, "worst_update": update,
            "losses": [float(s.loss) for s in steps], "nonfinite": bad, "tipped": tipped,
            "bound": bounds["grad"],
            "ok": bool(not bad and error <= bounds["grad"] and loss_rel <= bounds["loss"]
                       and update_error <= bounds["optimizer"])}


# A float64 port takes the reference's own decisions: the two agree to ~1e-15, far closer
# than any decision float32 could tip, and resolve() still finds one within ``kink``
# (1e-12) of its kink; weights load from float32 only, so its later steps could not be
# loaded into the port anyway.
def grad_case(mod, name: str, dtype: str, port: str | None = None) -> dict:
    """Run a port module's ``loss_and_grads`` on the ``grad`` case ``name`` (a variant id
    or a fixture of :data:`FIXTURE_LABELS`) and compare (:func:`compare_grad`)."""
    weights, x, labels = case_data(name)
    model = mod.load(weights, dtype)
    loss, grads = mod.loss_and_grads(model, x.astype(dtype), labels)
    acts = None if dtype == "float64" else (lambda: mod.activations(model, x.astype(dtype)))
    fixture = name if name in FIXTURE_LABELS else None
    return compare_grad(weights, x, labels, loss, grads, acts, dtype,
                        tolerance(dtype, fixture, port))


def steps_case(mod, vid: str, dtype: str, port: str | None = None, run=None) -> dict:
    """Run a port module's ``train_steps`` (or ``run``, with its signature) on the
    ``steps`` case ``vid`` and compare (:func:`compare_steps`); the port's activations at
    each step's weights come from its own ``load`` and ``activations``."""
    weights, x, labels = case_data(vid)
    lrs = poly_lrs()
    steps = list((run or mod.train_steps)(mod.load(weights, dtype), x.astype(dtype), labels,
                                          lrs, MOMENTUM, WEIGHT_DECAY))
    acts: list = []  # the port's own forward pass at the weights before each step, if asked
    for before in [weights.tensors] + [getattr(s, "weights", {}) for s in steps[:-1]]:
        if not before or nonfinite(before):
            break  # compare_steps stops there (a non-finite value fails the case)
        if dtype == "float64":
            acts.append(None)  # float64: the reference's own decisions (above)
        else:
            acts.append(lambda before=before: mod.activations(
                mod.load(Weights(dict(before), weights.meta), dtype), x.astype(dtype)))
    return compare_steps(weights, x, labels, steps, acts, lrs, dtype,
                         tolerance(dtype, port=port))


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
