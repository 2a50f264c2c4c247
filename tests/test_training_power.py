"""The float32 training checks have power: each planted defect of issue 27's list fails
them, with the float64 cases switched off, and the honest float32 port passes.

The honest port is the NumPy reference run in float32 (``ports.numpy``: its own float32
forward, backward and SGD step); each defect is that port with one thing wrong.  The
errors each defect leaves, against its bound, are the mutation table of
``docs/training.md`` (``python tests/test_training_power.py`` prints it)."""

from __future__ import annotations

import types

import numpy as np
import pytest

from conformance import training
from ports import numpy as ref
from ports._api import Step
from ports.numpy import train
from ports.spec import Variant

VID = "1_0-p1-complex"  # every kind of tensor: bypass convs, conv10 with padding
NAMES = list(Variant.from_id(VID).params())
M, WD = training.MOMENTUM, training.WEIGHT_DECAY


def caffe(w, v, g, lr):
    """Caffe's rule in the port's float32: (velocity after, weights after)."""
    v = np.float32(M) * v + np.float32(lr) * (g + np.float32(WD) * w)
    return v, w - v


def port(grad=None, rule=None):
    """The float32 NumPy port, its gradients passed through ``grad(name, g)`` and its
    steps taken by ``rule(w, v, g, lr, name) -> (velocity it reports, weights after)`` for
    each tensor (default: Caffe's rule)."""
    def loss_and_grads(model, x, labels):
        loss, grads = train.loss_and_grads(model, x, labels)
        return loss, {k: grad(k, g) if grad else g for k, g in grads.items()}

    rule = rule or honest_rule

    def train_steps(model, x, labels, lrs, momentum, weight_decay):
        v = {k: np.zeros_like(w) for k, w in model.params.items()}
        out = []
        for lr in lrs:
            loss, grads = loss_and_grads(model, x, labels)
            for k, w in model.params.items():
                v[k], model.params[k] = rule(w, v[k], grads[k], lr, k)
            out.append(Step(loss, grads, {k: t.copy() for k, t in v.items()},
                            {k: t.copy() for k, t in model.params.items()}))
        return out

    return types.SimpleNamespace(load=ref.load, activations=ref.activations,
                                 loss_and_grads=loss_and_grads, train_steps=train_steps)


def honest_rule(w, v, g, lr, name):
    return caffe(w, v, g, lr)


def scaled(name, factor):
    return lambda k, g: (g * np.float32(factor)).astype(np.float32) if k == name else g


def channel_scaled(name, factor):
    """One output channel of ``name``'s gradient scaled: a typical one (the median of the
    channels' largest gradients)."""
    def grad(k, g):
        if k != name:
            return g
        size = np.abs(g.reshape(len(g), -1)).max(axis=1)
        c = int(np.argsort(size)[len(size) // 2])
        g = g.copy()
        g[c] *= np.float32(factor)
        return g
    return grad


def nan_in(name):
    def grad(k, g):
        if k != name:
            return g
        g = g.copy()
        g.reshape(-1)[g.size // 2] = np.nan
        return g
    return grad


def update_scaled(name):
    def rule(w, v, g, lr, k):
        v, _ = caffe(w, v, g, lr)
        return v, (w - np.float32(1.01) * v if k == name else w - v)
    return rule


def decoupled(w, v, g, lr, k):  # Keras/AdamW's weight_decay: outside the velocity
    v = np.float32(M) * v + np.float32(lr) * g
    return v, w - v - np.float32(lr * WD) * w


def no_bias_decay(w, v, g, lr, k):  # decay_mult 0 on the biases
    if k.endswith(".weight"):
        return caffe(w, v, g, lr)
    v = np.float32(M) * v + np.float32(lr) * g
    return v, w - v


_buffers: dict = {}


def pytorch_momentum(w, v, g, lr, k):
    """``b <- m b + (g + wd w)``, ``w <- w - lr b``: reports ``lr b``, what it subtracted
    (the most favourable velocity such a port could report)."""
    b = np.float32(M) * _buffers.get(k, np.zeros_like(w)) + (g + np.float32(WD) * w)
    _buffers[k] = b
    step = np.float32(lr) * b
    return step, w - step


def nesterov(w, v, g, lr, k):  # Keras' SGD(nesterov=True): looks ahead along v
    v, _ = caffe(w, v, g, lr)
    return v, w - (np.float32(M) * v + np.float32(lr) * (g + np.float32(WD) * w))


def grad_record(p) -> dict:
    return training.grad_case(p, VID, "float32")


def steps_record(p) -> dict:
    _buffers.clear()
    return training.steps_case(p, VID, "float32")


DEFECTS = {  # name -> (port, which cases it runs)
    "decoupled weight decay": (port(rule=decoupled), "steps"),
    "no decay on biases": (port(rule=no_bias_decay), "steps"),
    "PyTorch's momentum rule": (port(rule=pytorch_momentum), "steps"),
    "Nesterov momentum": (port(rule=nesterov), "steps"),
}


def _excess(r: dict) -> float:
    """How far past its bounds a record is (>1: fails; inf for a non-finite value)."""
    if r["nonfinite"]:
        return float("inf")
    bounds = training.tolerance("float32")
    out = max(r["max_rel"] / bounds["grad"], r["loss_rel"] / bounds["loss"])
    if "optimizer_rel" in r:
        out = max(out, r["optimizer_rel"] / bounds["optimizer"])
    return out


def test_the_honest_float32_port_passes():
    g, s = grad_record(port()), steps_record(port(rule=honest_rule))
    assert g["ok"] and s["ok"], (g, s)
    assert _excess(g) < 0.2 and _excess(s) < 0.5  # margin: honest errors are rounding


@pytest.fixture(scope="module")
def once():
    return honest_gradient()


def honest_gradient():
    """The honest port's loss, gradients and activations on the gradient case, and the
    float64 reference through its decisions, computed once: a defect planted in the
    reported gradients changes neither.  (Taken as is: ``training.resolve`` looking for
    decisions that explain a planted defect is shown not to find any in
    :func:`test_no_choice_of_decisions_explains_a_defect`.)"""
    weights, x, labels = training.case_data(VID)
    model = ref.load(weights, "float32")
    loss, grads = train.loss_and_grads(model, x, labels)
    acts = ref.activations(model, x)
    decided = training.decided(weights, {k: v.astype(np.float32) for k, v in
                                         weights.tensors.items()}, x, labels, acts)
    return weights, x, labels, loss, grads, acts, decided


def _each_tensor(once, defect, monkeypatch) -> dict[str, dict]:
    """The grad record of the port with ``defect(name)`` planted, for every tensor."""
    weights, x, labels, loss, grads, acts, decided = once
    monkeypatch.setattr(training, "resolve", lambda *args: (*decided, []))
    bounds = training.tolerance("float32")
    out = {}
    for name in NAMES:
        planted = {k: defect(name)(k, g) for k, g in grads.items()}
        out[name] = training.compare_grad(weights, x, labels, loss, planted, acts, "float32",
                                          bounds)
    return out


def test_one_tensor_gradient_off_by_one_percent_fails(once, monkeypatch):
    """Every tensor in turn."""
    records = _each_tensor(once, lambda name: scaled(name, 1.01), monkeypatch)
    missed = [n for n, r in records.items() if r["ok"] or r["worst_tensor"] != n]
    assert not missed, missed


def test_one_output_channel_off_by_five_percent_fails(once, monkeypatch):
    """Every tensor in turn, a typical channel of each (the median largest gradient)."""
    records = _each_tensor(once, lambda name: channel_scaled(name, 1.05), monkeypatch)
    missed = [n for n, r in records.items() if r["ok"] or r["worst_tensor"] != n]
    assert not missed, missed


def test_a_nan_in_any_one_tensor_fails(once, monkeypatch):
    records = _each_tensor(once, nan_in, monkeypatch)
    shapes = Variant.from_id(VID).params()
    missed = [n for n, r in records.items()
              if r["ok"] or r["nonfinite"] != [f"{n} (1 of {int(np.prod(shapes[n]))})"]]
    assert not missed, missed


@pytest.mark.parametrize("defect", [scaled("conv1.weight", 1.01),
                                    scaled("fire9.squeeze.bias", 1.01),
                                    channel_scaled("fire9.expand3x3.weight", 1.05)])
def test_no_choice_of_decisions_explains_a_defect(defect):
    """The full check, with :func:`conformance.training.resolve` trying every decision near
    a kink the other way: still beyond the bound."""
    r = grad_record(port(defect))
    assert not r["ok"] and r["max_rel"] > 10 * r["bound"], r


def test_a_training_pass_that_tips_decisions_its_activations_do_not_passes():
    """A gradient of the other side of a decision near its kink, with activations that do
    not show it (a port's activations and its training pass are two computations): the
    decision is found from the gradient, and the record passes, naming it; without it the
    gradient is more than 1e-3 off."""
    from test_train_reference import tipped

    weights, x, labels, kink, loss, grads, acts, _ = tipped()
    _, plain = training.decided(weights, weights.tensors, x, labels, acts)
    assert max(training.relative_errors(grads, plain).values()) > 1e-3
    r = training.compare_grad(weights, x, labels, loss, grads, acts, "float32",
                              training.tolerance("float32"))
    assert r["ok"] and r["tipped"] == [f"{kink.site}{list(kink.index)}"], r
    assert r["max_rel"] < 1e-6, r


def test_a_gradient_defect_fails_the_steps_case_too():
    r = steps_record(port(scaled("fire5.squeeze.weight", 1.01), rule=honest_rule))
    assert not r["ok"] and r["worst_tensor"].endswith(" fire5.squeeze.weight"), r
    r = steps_record(port(nan_in("conv10.bias"), rule=honest_rule))
    assert not r["ok"] and r["nonfinite"][0].startswith("step 1 conv10.bias"), r


@pytest.mark.parametrize("name", ["conv1.weight", "fire2.squeeze.bias", "fire6.bypass.weight",
                                  "conv10.bias"])
def test_one_tensor_update_off_by_one_percent_fails(name):
    r = steps_record(port(rule=update_scaled(name)))
    assert not r["ok"] and name in r["worst_update"], r


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_optimizer_convention_mistakes_fail(defect):
    p, _ = DEFECTS[defect]
    r = steps_record(p)
    assert not r["ok"] and r["optimizer_rel"] > 10 * training.tolerance("float32")[
        "optimizer"], r


def table() -> list[str]:
    """The mutation table: per defect, the check that catches it and by how much (its
    error over its bound; for a defect planted in every tensor in turn, the weakest)."""
    class Patch:  # pytest's monkeypatch, outside pytest
        def setattr(self, obj, name, value):
            setattr(obj, name, value)

    real = training.resolve
    rows = ["| defect (float32, `1_0-p1-complex`) | fails | error / bound |", "| --- | --- | --- |"]
    bounds = training.tolerance("float32")
    data = honest_gradient()
    for label, defect in [(f"one tensor's gradient x 1.01 (each of the {len(NAMES)} in turn)",
                           lambda n: scaled(n, 1.01)),
                          ("one output channel's gradient x 1.05 (each tensor in turn)",
                           lambda n: channel_scaled(n, 1.05)),
                          ("a NaN in one tensor's gradient (each in turn)", nan_in)]:
        records = _each_tensor(data, defect, Patch())
        training.resolve = real
        weakest = min(records.items(), key=lambda kv: _excess(kv[1]))
        rows.append(f"| {label} | {sum(not r['ok'] for r in records.values())} of "
                    f"{len(records)} | >= {_excess(weakest[1]):.3g} ({weakest[0]}) |")
    for label, p in [("one tensor's update x 1.01 (conv1.weight)",
                      port(rule=update_scaled("conv1.weight"))),
                     ("one tensor's update x 1.01 (conv10.bias)",
                      port(rule=update_scaled("conv10.bias")))] + \
            [(name, d[0]) for name, d in DEFECTS.items()]:
        r = steps_record(p)
        what = r["worst_update"] if r["optimizer_rel"] > bounds["optimizer"] else \
            r["worst_tensor"]
        rows.append(f"| {label} | {'no' if r['ok'] else 'yes'} | {_excess(r):.3g} ({what}) |")
    g, s = grad_record(port()), steps_record(port())
    rows.append(f"| none (the honest float32 port) | {'no' if g['ok'] and s['ok'] else 'YES'} "
                f"| {max(_excess(g), _excess(s)):.2g} |")
    return rows


if __name__ == "__main__":
    print("\n".join(table()))
