"""The float64 reference backward pass and Caffe's SGD step, written for clarity.

The loss is Caffe's ``SoftmaxWithLoss`` on ``pool10`` (the global average of conv10's ReLU,
i.e. the logits): softmax cross-entropy averaged over the batch.  Dropout is off, so the
gradients are deterministic.  The backward pass walks the network of
:func:`ports.numpy.forward` in reverse through what that one forward pass recorded
(:func:`recorded`: each activation and each ReLU's input); each rule mirrors one forward
function of :mod:`ports.numpy.network`:

* convolution: ``dW = dy^T @ im2col(x)``, ``db = sum(dy)``, ``dx = col2im(dy @ W)``;
* ReLU: the gradient passes where the output is positive (Caffe: ``bottom_data > 0``);
* ceil-mode max pool: each window's gradient goes to its first maximum in row-major order
  (Caffe and PyTorch break ties that way); padded ``-inf`` cells never receive any;
* concatenation: the gradient is split along channels, expand1x1 first;
* bypass: the sum's gradient goes to both branches (identity, or the 1x1 bypass conv);
* global average pool: ``dy / (H * W)`` spread over the map.

Each ReLU's mask and each pool's choice of maximum is a *decision* of the forward pass;
``loss_and_grads(..., decide=f)`` lets ``f(site, choice)`` replace one (``site`` the conv a
ReLU follows, or the pool's name; ``choice`` the boolean mask, or the index of the winner in
each flattened window).  :func:`decisions_of` makes ``f`` from another forward pass's
activations: the conformance suite takes a float32 port's own decisions that way, so the
float64 gradient it compares with is that of the same linear piece (near a kink, float32
rounding may put an input on the other side, and both gradients are right).
:func:`kinks` lists the decisions within rounding of their kink, which a port's training
pass and its activations (two computations that may round differently) can take apart.

``distill_loss_and_grads`` takes the same backward pass from :func:`distillation`, Hinton's
soft-target loss against another network's logits (no labels: what fine-tuning a compressed
network, :mod:`ports.finetune`, minimises).

``train_steps`` is Caffe's ``SGDSolver`` with L2 weight decay on every weight and bias
(the released train_val prototxts leave ``decay_mult`` at 1)::

    v <- momentum * v + lr_t * (grad + weight_decay * w)
    w <- w - v
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import spec as S
from .._api import Step
from .._predict import as_input
from .network import POOL, SqueezeNet, forward

__all__ = ["loss_and_grads", "distill_loss_and_grads", "train_steps", "dropout",
           "softmax_cross_entropy", "distillation", "recorded", "backward", "decisions_of",
           "kinks", "Kink"]


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean over the batch of ``-log softmax(logits)[label]``, and its gradient
    ``(softmax - onehot) / N`` with respect to ``logits`` ``[N, C]``."""
    log_p = _log_softmax(logits)
    rows = np.arange(len(logits))
    grad = np.exp(log_p)
    grad[rows, labels] -= 1.0
    return float(-log_p[rows, labels].mean()), grad / len(logits)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def distillation(logits: np.ndarray, teacher: np.ndarray,
                 temperature: float = 1.0) -> tuple[float, np.ndarray]:
    """Hinton's soft-target loss of ``logits`` [N, C] against a teacher's logits [N, C]:
    ``T**2`` times the batch mean of ``KL(softmax(teacher / T) || softmax(logits / T))``
    (0 when the two agree up to a constant per image), and its gradient with respect to
    ``logits``, ``T * (softmax(logits / T) - softmax(teacher / T)) / N``."""
    if teacher.shape != logits.shape:
        raise ValueError(f"teacher logits: expected shape {logits.shape}, got {teacher.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    t = temperature
    log_p, log_q = _log_softmax(teacher / t), _log_softmax(logits / t)
    p = np.exp(log_p)
    loss = t * t * float((p * (log_p - log_q)).sum(axis=1).mean())
    return loss, t * (np.exp(log_q) - p) / len(logits)


def conv2d_backward(x: np.ndarray, w: np.ndarray, stride: int, padding: int,
                    dy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``dy`` [N,O,H',W'] of :func:`ports.numpy.conv2d` -> (dx [N,C,H,W], dW [O,C,k,k],
    db [O])."""
    n, c, height, width = x.shape
    o, _, k, _ = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))) if padding else x
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    ho, wo = dy.shape[2:]
    cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(n * ho * wo, c * k * k)
    dy_rows = dy.transpose(0, 2, 3, 1).reshape(n * ho * wo, o)
    dw = (dy_rows.T @ cols).reshape(w.shape)
    db = dy_rows.sum(axis=0)
    dcols = (dy_rows @ w.reshape(o, -1)).reshape(n, ho, wo, c, k, k)
    dxp = np.zeros_like(xp)
    for i in range(k):  # col2im: each kernel offset adds its share back where it read
        for j in range(k):
            dxp[:, :, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride] \
                += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    dx = dxp[:, :, padding:padding + height, padding:padding + width] if padding else dxp
    return dx, dw, db


def pool_windows(x: np.ndarray, pool: S.MaxPool) -> np.ndarray:
    """The windows of a ceil-mode max pool: [N,C,H,W] -> [N,C,H',W', k*k], row-major within
    each window, overhanging cells ``-inf``."""
    height, width = x.shape[2:]
    k, s = pool.kernel, pool.stride
    xp = np.pad(x, ((0, 0), (0, 0), (0, pool.ceil_extra(height)), (0, pool.ceil_extra(width))),
                constant_values=-np.inf)
    ho, wo = pool.out_size(height), pool.out_size(width)
    windows = sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :ho, :wo]
    return windows.reshape(*windows.shape[:4], k * k)


def max_pool_ceil_backward(x: np.ndarray, pool: S.MaxPool, dy: np.ndarray,
                           first_max: np.ndarray | None = None) -> np.ndarray:
    """``dy`` [N,C,H',W'] of :func:`ports.numpy.max_pool_ceil` -> dx [N,C,H,W].
    ``first_max`` [N,C,H',W']: the winner's index in each flattened window (default: the
    first maximum in row-major order); or [N,C,H',W',k*k], each window's share of ``dy``
    per cell (a tie split between its maxima)."""
    height, width = x.shape[2:]
    k, s = pool.kernel, pool.stride
    if first_max is None:
        first_max = pool_windows(x, pool).argmax(axis=-1)  # row-major first
    xp = np.zeros((*x.shape[:2], height + pool.ceil_extra(height),
                   width + pool.ceil_extra(width)), x.dtype)
    ho, wo = dy.shape[2:]
    shares = first_max.ndim == dy.ndim + 1
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s] \
                += dy * first_max[..., i * k + j] if shares \
                else np.where(first_max == i * k + j, dy, 0.0)
    return xp[:, :, :height, :width]


def relu_backward(mask: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Gradient through ``relu(z)``: passes where ``mask`` (``z > 0``)."""
    return dy * mask


def _same(site: str, choice: np.ndarray) -> np.ndarray:
    return choice  # backward's default ``decide``: the forward pass's own decisions


def recorded(model: SqueezeNet, x: np.ndarray) -> dict[str, np.ndarray]:
    """Everything :func:`ports.numpy.forward` records on ``x``: each named activation, each
    ReLU's input (``name:z``), the logits."""
    acts: dict[str, np.ndarray] = {}

    def keep(name: str, h: np.ndarray) -> np.ndarray:
        acts[name] = h
        return h

    forward(model, x, keep)
    return acts


def backward(model: SqueezeNet, x: np.ndarray, acts: dict, dlogits: np.ndarray,
             decide=_same) -> dict[str, np.ndarray]:
    """The gradient of every parameter from ``dlogits`` [N, C], the gradient of the logits,
    walking the network of :func:`ports.numpy.forward` backwards through what it recorded
    (``acts``: :func:`recorded` on ``x``)."""
    p, v, grads = model.params, model.variant, {}

    def conv(name: str, inp, d, stride: int = 1, padding: int = 0) -> np.ndarray:
        dx, grads[f"{name}.weight"], grads[f"{name}.bias"] = conv2d_backward(
            inp, p[f"{name}.weight"], stride, padding, d)
        return dx

    def relu(name: str, d: np.ndarray) -> np.ndarray:
        return relu_backward(decide(name, acts[f"{name}:z"] > 0), d)

    def pool(name: str, inp: np.ndarray, d: np.ndarray) -> np.ndarray:
        return max_pool_ceil_backward(inp, POOL, d, decide(name, pool_windows(inp, POOL)
                                                          .argmax(axis=-1)))

    def fire_input(n: int) -> np.ndarray:  # pool1 for fire2; fire n-1's output or its pool
        return acts.get(f"pool{n - 1}", acts.get(f"fire{n - 1}"))

    def fire(n: int, d: np.ndarray) -> np.ndarray:
        h, s, split = fire_input(n), acts[f"fire{n}.squeeze"], acts[f"fire{n}.expand1x1"].shape[1]
        ds = conv(f"fire{n}.expand1x1", s, relu(f"fire{n}.expand1x1", d[:, :split])) \
            + conv(f"fire{n}.expand3x3", s, relu(f"fire{n}.expand3x3", d[:, split:]), padding=1)
        dh = conv(f"fire{n}.squeeze", h, relu(f"fire{n}.squeeze", ds))
        if S.bypass_of(n, v.bypass) == "identity":
            dh = dh + d
        elif S.bypass_of(n, v.bypass) == "conv":
            dh = dh + conv(f"fire{n}.bypass", h, d)
        return dh

    shape = acts["conv10"].shape  # pool10: each map's mean
    d = np.broadcast_to(dlogits[:, :, None, None] / (shape[2] * shape[3]), shape).copy()
    d = conv("conv10", fire_input(10), relu("conv10", d), padding=v.final_conv_padding)
    for n in range(9, 1, -1):
        if f"fire{n}" in S.POOL_AFTER[v.version]:
            d = pool(f"pool{n}", acts[f"fire{n}"], d)
        d = fire(n, d)
    d = pool("pool1", acts["conv1"], d)
    conv("conv1", x, relu("conv1", d), stride=S.STEM[v.version][2])
    return grads


def loss_and_grads(model: SqueezeNet, x, labels,
                   decide=_same) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy of ``model`` on ``x`` [N,3,H,W] with integer ``labels``
    [N], and its gradient with respect to every parameter: ``{canonical name: array}``,
    OIHW, in the model's dtype (dropout off; ``decide``: see the module docstring)."""
    x = as_input(x, model.variant).astype(model.dtype)
    labels = _labels(labels, len(x), model.variant.num_classes)
    return _loss_and_grads(model, x, lambda logits: softmax_cross_entropy(logits, labels),
                           decide)


def distill_loss_and_grads(model: SqueezeNet, x, teacher, temperature: float = 1.0,
                           decide=_same) -> tuple[float, dict[str, np.ndarray]]:
    """:func:`distillation` of ``model``'s logits on ``x`` [N,3,H,W] against ``teacher``
    [N, C] (another network's logits on the same images), and its gradient with respect to
    every parameter, as :func:`loss_and_grads`."""
    x = as_input(x, model.variant).astype(model.dtype)
    teacher = np.asarray(teacher, np.float64)
    return _loss_and_grads(model, x, lambda logits: distillation(
        logits.astype(np.float64), teacher, temperature), decide)


def _loss_and_grads(model: SqueezeNet, x: np.ndarray, loss_of, decide):
    """``loss_of(logits) -> (loss, dlogits)`` on ``model``'s forward pass, and every
    parameter's gradient (the model's dtype)."""
    acts = recorded(model, x)
    loss, dlogits = loss_of(acts["logits"])
    grads = backward(model, x, acts, dlogits.astype(model.dtype), decide)
    return loss, {name: grads[name] for name in model.variant.params()}


def train_steps(model: SqueezeNet, x, labels, lrs, momentum: float = 0.9,
                weight_decay: float = 2e-4) -> list[Step]:
    """One Caffe SGD step per learning rate in ``lrs`` (see the module docstring), in place;
    per step its loss (before it), gradient, velocity and weights after it
    (:class:`ports._api.Step`, ``{canonical name: array}`` in the model's dtype)."""
    history = {k: np.zeros_like(v) for k, v in model.params.items()}
    out = []
    for lr in lrs:
        loss, grads = loss_and_grads(model, x, labels)
        sgd_step(model.params, history, grads, lr, momentum, weight_decay)
        out.append(Step(loss, grads, {k: v.copy() for k, v in history.items()},
                        {k: v.copy() for k, v in model.params.items()}))
    return out


def sgd_step(params: dict, history: dict, grads: dict, lr: float, momentum: float,
             weight_decay: float) -> None:
    """Caffe's SGD update of ``params`` and its momentum ``history``, in place."""
    for name, w in params.items():
        history[name] = momentum * history[name] + lr * (grads[name] + weight_decay * w)
        params[name] = w - history[name]


def decisions_of(variant: S.Variant, acts: dict[str, np.ndarray] | None, flips=()):
    """A ``decide`` hook (module docstring) that takes every decision as the forward pass
    whose activations are ``acts`` took it (``{name: array}`` of
    ``variant.activation_names()``, NCHW, any dtype; None: this pass's own decisions): a
    ReLU passes the gradient where its output there is positive, a pool gives it to the
    first maximum of each window of its input there (row-major, as Caffe and PyTorch break
    ties); then each :class:`Kink` in ``flips`` taken the other way."""
    names = variant.activation_names()
    pools = {layer.name: layer for layer in variant.layers() if isinstance(layer, S.MaxPool)}

    def decide(site: str, choice: np.ndarray) -> np.ndarray:
        if acts is None:
            out = choice.copy()
        elif site in pools:  # the pool's input is the activation just before it
            before = np.asarray(acts[names[names.index(site) - 1]], np.float64)
            out = pool_windows(before, pools[site]).argmax(axis=-1)
        else:
            out = np.asarray(acts[site]) > 0
        if out.shape != choice.shape:
            raise ValueError(f"activations of {site}: decisions of shape {out.shape}, "
                             f"expected {choice.shape}")
        mine = [kink for kink in flips if kink.site == site]
        for kink in mine:
            if not kink.split:
                out[kink.index] = (not out[kink.index]) if not kink.pair else \
                    kink.pair[1] if out[kink.index] == kink.pair[0] else kink.pair[0]
        split = [kink for kink in mine if kink.split]
        if split:  # shares of each window: one-hot, the split ones half to each maximum
            cells = pools[site].kernel ** 2
            out = (out[..., None] == np.arange(cells)).astype(np.float64)
            for kink in split:
                out[kink.index] = 0.0
                out[kink.index + (kink.pair[0],)] = out[kink.index + (kink.pair[1],)] = 0.5
        return out

    return decide


class Kink(NamedTuple):
    """A decision of a forward pass within rounding of its kink: ``site`` (the conv a ReLU
    follows, or a pool's name), ``index`` (the element, or the pool window ``[n, c, i, j]``)
    and for a pool ``pair``, its two nearly equal candidates (indices in the window).  As a
    flip: taken the other way, or for a pool with ``split``, the gradient shared equally
    between the two (what JAX's max-pool gradient does with a float32 tie)."""

    site: str
    index: tuple
    pair: tuple = ()
    closeness: float = 0.0  # distance from the kink, relative to the site's largest value
    split: bool = False


def kinks(model: SqueezeNet, x, margin: float) -> list[Kink]:
    """The decisions of ``model``'s forward pass on ``x`` within ``margin`` (relative to the
    site's largest magnitude) of a kink, closest first: a ReLU input that near 0, a pool
    window whose two largest inputs are that close (two zeros excepted: dead ReLUs pass no
    gradient either way).  Another computation of the same numbers, rounding differently,
    may take any of them the other way."""
    acts = recorded(model, as_input(x, model.variant).astype(model.dtype))
    names = model.variant.activation_names()
    out = []
    for name in names:
        if name.startswith("pool") and name != "pool10":  # its input: the activation before
            before = acts[names[names.index(name) - 1]]
            scale = float(np.abs(before).max())
            windows = pool_windows(before, POOL)
            order = np.argsort(-windows, axis=-1, kind="stable")
            top = np.take_along_axis(windows, order[..., :2], axis=-1)
            gap = top[..., 0] - top[..., 1]
            for idx in zip(*np.nonzero((gap <= margin * scale) & (top[..., 0] != 0))):
                out.append(Kink(name, tuple(int(i) for i in idx),
                                (int(order[idx][0]), int(order[idx][1])),
                                float(gap[idx]) / scale))
        elif f"{name}:z" in acts:  # a ReLU's input
            z = acts[f"{name}:z"]
            scale = float(np.abs(z).max())
            for idx in zip(*np.nonzero(np.abs(z) <= margin * scale)):
                out.append(Kink(name, tuple(int(i) for i in idx),
                                closeness=float(abs(z[idx])) / scale))
    return sorted(out, key=lambda k: k.closeness)


def _labels(labels, n: int, classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected {n} integer class indices, got shape "
                         f"{labels.shape} dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"labels: expected classes in 0..{classes - 1}, got "
                         f"{labels.min()}..{labels.max()}")
    return labels.astype(np.int64)


def dropout(model: SqueezeNet, x, training: bool = True, seed: int = 0) -> np.ndarray:
    """Caffe's dropout at the spec's rate: in training each value is kept with probability
    ``1 - rate`` and scaled by ``1 / (1 - rate)``, the others are 0; at inference the
    identity.  (The reference's gradients are taken with dropout off.)"""
    x = np.asarray(x)
    if not training:
        return x.copy()
    rate = next(layer.rate for layer in model.variant.layers() if isinstance(layer, S.Dropout))
    keep = np.random.default_rng(seed).random(x.shape) >= rate
    return np.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)
