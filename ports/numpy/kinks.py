"""Decisions that float32 rounding could tip, and the gradient on their other side.

ReLU and max pool are not differentiable everywhere: a ReLU input ``z`` at 0, or two equal
maxima in one pool window, is a *kink*, and the gradient there depends on which side the
computation lands.  A float32 port computes every activation with a relative error of about
1e-6, so where the float64 reference finds an input within that distance of a kink the port
may take the other branch, and its gradient then differs by the whole contribution of that
one element -- a correct gradient of the same function on the other side.  At 40 x 40 a
batch has ~3e5 ReLU inputs, so each case has a handful of them (their number varies with the
machine's BLAS, which rounds differently).

This module finds them (:func:`fragile`: ``|z| <= margin * max |z|`` over the ReLU's input,
or a window whose two largest values differ by ``<= margin * max |x|`` over the pool's input)
and computes, for each, the reference gradient with that one decision flipped (the backward
pass resumed at the decision's layer: what lies above it is the same on both sides).
:func:`reference` sums ``|grad_flipped - grad|`` over them: the per-entry slack a float32
comparison grants on top of its tolerance, for the gradient and, through the steps that
follow, for the weights after a few SGD steps.  A wrong port is still caught: the slack is
exact, entry by entry, and covers only the entries these few elements reach.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import SqueezeNet
from .train import _labels, _Tape, loss_and_grads, pool_windows, sgd_step, softmax_cross_entropy

__all__ = ["Decision", "Reference", "fragile", "reference"]


class Decision(NamedTuple):
    """One decision near a kink: ``site`` (the conv a ReLU follows, or a pool's name),
    ``index`` (the element of the ReLU's input, or the pool window [n, c, i, j]) and
    ``other`` (the pool window's runner-up, -1 for a ReLU)."""

    site: str
    index: tuple[int, ...]
    other: int = -1

    def flip(self, site: str, choice: np.ndarray) -> np.ndarray:
        """A ``decide`` hook for :func:`ports.numpy.train.loss_and_grads`."""
        if site != self.site:
            return choice
        choice = choice.copy()
        choice[self.index] = (not choice[self.index]) if self.other < 0 else self.other
        return choice


def _sites(tape: _Tape):
    """(step, site, pool, input) of every ReLU (pool None, its input z) and max pool (the
    ``spec.MaxPool``, its input) of a recorded forward pass; ``step``: the index in
    ``tape.steps`` whose backward takes the site's decisions."""
    for i, (kind, layer, saved) in enumerate(tape.steps):
        if kind == "relu":
            yield i, layer.of, None, saved
        elif kind == "pool":
            yield i, layer.name, layer, saved
        elif kind == "fire":
            _, zs, z1, z3 = saved
            yield i, layer.squeeze.name, None, zs
            yield i, layer.expand1x1.name, None, z1
            yield i, layer.expand3x3.name, None, z3


def fragile(tape: _Tape, margin: float) -> list[Decision]:
    """The decisions of a recorded forward pass within ``margin`` (relative to the site's
    largest magnitude) of a kink."""
    out = []
    for _, site, pool, a in _sites(tape):
        scale = float(np.abs(a).max())
        if pool is None:
            for idx in zip(*np.nonzero(np.abs(a) <= margin * scale)):
                out.append(Decision(site, tuple(int(i) for i in idx)))
        else:
            windows = pool_windows(a, pool)
            order = np.argsort(-windows, axis=-1, kind="stable")
            top = np.take_along_axis(windows, order[..., :2], axis=-1)
            # Two zeros are outputs of dead ReLUs: the gradient stops there either way.
            close = np.nonzero((top[..., 0] - top[..., 1] <= margin * scale)
                               & (top[..., 0] != 0))
            for idx in zip(*close):
                out.append(Decision(site, tuple(int(i) for i in idx), int(order[idx][1])))
    return out


def _flips(tape: _Tape, base: dict, entering: dict, margin: float):
    """(count, slack, [(decision, flipped gradients, |flipped - base|)]) of a recorded
    forward pass whose backward gave ``base`` (``entering``: what it kept); only flips
    that change something are listed."""
    slack = {k: np.zeros_like(v) for k, v in base.items()}
    decisions, moved = fragile(tape, margin), []
    step = {site: i for i, site, _, _ in _sites(tape)}
    for d in decisions:
        i = step[d.site]
        grads = {**base, **tape.backward(entering[i], d.flip, start=i)}
        delta = {k: np.abs(grads[k] - base[k]) for k in slack}
        if any(v.any() for v in delta.values()):
            moved.append((d, grads, delta))
        for k in slack:
            slack[k] += delta[k]
    return len(decisions), slack, moved


class Reference(NamedTuple):
    """The float64 reference of a few SGD steps, with the slack of its fragile decisions.

    ``loss``, ``grads``: the loss and gradient at the start (``loss_and_grads``);
    ``losses``, ``end``: the loss before each step and the weights after the last
    (``train_steps``); ``fragile``: (decisions at the start, over all the steps);
    ``slack_grad``, ``slack_end``: per-entry slack of the gradient and of the final weights;
    ``slack_losses``: per step, how far the followed trajectories' losses are."""

    loss: float
    grads: dict
    losses: list
    end: dict
    fragile: tuple
    slack_grad: dict
    slack_end: dict
    slack_losses: np.ndarray


def reference(model: SqueezeNet, x: np.ndarray, labels, lrs, momentum: float,
              weight_decay: float, margin: float, follow: float = 1e-5) -> Reference:
    """``train_steps(model, x, labels, lrs, momentum, weight_decay)`` (float64, ``x``
    [N,3,H,W]) and the slack of every decision within ``margin`` of a kink.

    A gradient that differs by ``delta`` at step ``t`` moves the final weights by
    ``lr_t * (1 + momentum + ... + momentum ** (T - 1 - t)) * delta`` to first order.  But
    a flip that moves some tensor's final weights by more than ``follow`` of that tensor's
    largest change also moves the next steps' activations past other decisions (one ReLU of
    fire8 tipped at step 1 of 1_0-p0-none tips ~800 more by step 5): for such a flip the
    whole other trajectory is computed (flipped at step ``t``, then onward as usual) and
    its distance from the reference's final weights is the slack; its losses' distance
    from the reference's is the loss slack.  ``model`` is left as it was."""
    params = model.params
    start = {k: v.copy() for k, v in params.items()}
    onehot = _labels(labels, len(x), model.variant.num_classes)
    history = {k: np.zeros_like(v) for k, v in start.items()}
    runs, losses = [], []  # per step: the state before it, its forward and backward
    for lr in lrs:
        weights = {k: v.copy() for k, v in params.items()}
        hist = {k: v.copy() for k, v in history.items()}
        tape = _Tape(model, weights)  # this step's weights, while params move on
        loss, dlogits = softmax_cross_entropy(tape.run(np.asarray(x, model.dtype)), onehot)
        entering: dict = {}
        grads = tape.backward(dlogits, keep=entering)
        runs.append((weights, hist, tape, grads, entering))
        losses.append(loss)
        sgd_step(params, history, grads, lr, momentum, weight_decay)
    final = {k: v.copy() for k, v in params.items()}
    scale = {k: float(np.abs(final[k] - start[k]).max()) or 1.0 for k in final}
    slack = {k: np.zeros_like(v) for k, v in start.items()}
    loss_slack = np.zeros(len(lrs))
    counts = []
    for t, lr in enumerate(lrs):
        weights, hist0, tape, base, entering = runs[t]
        count, step_slack, moved = _flips(tape, base, entering, margin)
        counts.append(count)
        if t == 0:
            slack_grad = step_slack
        carry = lr * sum(momentum ** j for j in range(len(lrs) - t))
        for _, flipped, delta in moved:
            if max(float(carry * delta[k].max()) / scale[k] for k in delta) <= follow:
                for k in slack:
                    slack[k] += carry * delta[k]
                continue
            params.update({k: v.copy() for k, v in weights.items()})
            hist = {k: v.copy() for k, v in hist0.items()}
            sgd_step(params, hist, flipped, lr, momentum, weight_decay)
            for u in range(t + 1, len(lrs)):
                loss, grads = loss_and_grads(model, x, labels)
                loss_slack[u] += abs(loss - losses[u])
                sgd_step(params, hist, grads, lrs[u], momentum, weight_decay)
            for k in slack:
                slack[k] += np.abs(params[k] - final[k])
    params.update(start)
    first_grads = runs[0][3]
    return Reference(losses[0], {k: first_grads[k] for k in model.variant.params()}, losses,
                     final, (counts[0], sum(counts)), slack_grad, slack, loss_slack)
